"""The shipped YAML configs, installed with the package so ``fer-pipe demo`` finds its own."""
