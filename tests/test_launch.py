"""Stage processes are forked from a forkserver started at a process's first run; a later run in
the same process still gives them the environment and standard streams of its own moment, as a
freshly spawned process would get them."""
from __future__ import annotations

import os
import subprocess
import sys

from fault_plugin import install_distribution

PROBE = '''
import os
import sys

from fer_pipe.messages import EXPRESSIONS, FRAME
from fer_pipe.stage import Stage, StageParams


class Probe(Stage):
    """Says the PROBE variable on both standard streams when it opens."""
    Params = StageParams
    reads = FRAME
    writes = EXPRESSIONS

    def open(self):
        print("out:", os.environ.get("PROBE"), flush=True)
        print("err:", os.environ.get("PROBE"), file=sys.stderr, flush=True)

    def process(self, packet):
        packet.faces = []
        return (packet,)
'''

TWO_RUNS = '''
import os
import sys

from fer_pipe.config import load_graph
from fer_pipe.runner import Runner


def run(tag):
    """One run with PROBE set to ``tag`` and this process's stdout and stderr in tag's files."""
    os.environ["PROBE"] = tag
    saved = os.dup(1), os.dup(2)
    with open(tag + ".out", "w") as out, open(tag + ".err", "w") as err:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        try:
            code = Runner(load_graph(sys.argv[1]), progress=False).run().exit_code
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
    assert code == 0, code


if __name__ == "__main__":
    run("first")
    run("second")
'''


def test_a_second_run_in_one_process_gives_its_stages_that_moments_environment_and_streams(short_clip, tmp_path):
    env = install_distribution(tmp_path / "plugin", "fer-probe", {"fer_probe.py": PROBE},
                               "[fer_pipe.stages]\nprobe = fer_probe:Probe\n")
    (tmp_path / "graph.yaml").write_text(
        "stages:\n"
        f"  source: {{type: video, params: {{path: '{short_clip}', max_frames: 2}}}}\n"
        "  probe: {type: probe, inputs: [source]}\n"
        f"  csv: {{type: csv, inputs: [probe], params: {{path: '{tmp_path / 'out.csv'}'}}}}\n")
    (tmp_path / "two_runs.py").write_text(TWO_RUNS)
    done = subprocess.run([sys.executable, "two_runs.py", "graph.yaml"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=180, env={**os.environ, **env})
    assert done.returncode == 0, done.stderr
    for tag in ("first", "second"):
        assert (tmp_path / f"{tag}.out").read_text().splitlines() == [f"out: {tag}"]
        assert f"err: {tag}\n" in (tmp_path / f"{tag}.err").read_text()
