"""``fer-pipe train``: train the classifier on FER-2013, resumably, and write the shippable folder.

Every epoch ends with a full checkpoint (weights, optimizer state, schedule position and
history), so an interrupted run resumes where it stopped with ``--resume``; the learning-rate
schedule is a function of the optimizer's step count, so a resumed run follows the same curve.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shlex
import shutil
import signal
import sys
import time
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import numpy as np

from .. import hangup
from ..arguments import home, made_path, number, whole
from ..errors import InputError, OutputError, UserError, one_line
from ..machine import cpu_model
from ..messages import EMOTIONS
from ..native_stderr import output_shown_on_failure
from ..output_files import cannot_write, held_folder, make_folder, write_whole
from ..preprocess import FACE_SIZE, preprocess_dataset
from ..stop_signals import handling, signals_held
from .data import FerSplit, images_sha256, load_splits, publictest_sample, sha256_of

if TYPE_CHECKING:  # keras is imported where it is used: the CLI starts without it
    import keras

CHECKPOINT = "checkpoint.keras"
EXPORTING = ".export"  # the exports are made here, then moved into --out together
STATE = "train_state.json"
NOT_OPTIONS = {"func", "resume", "command", "debug", "session_epochs", "extend", "extend_lr"}
"""Arguments that describe one invocation rather than the training run; never restored on resume."""
THIS_INVOCATION = {"out", "data", "verbose", "train_rows"}
"""Saved with the run's options, but a resumed run takes them from its own invocation: the
folders may have moved (the data is checked by its sha256 instead), and ``train_rows`` follows
from the restored ``limit``."""
RECALIBRATION_STEPS = 30
"""Batches the BatchNorm re-estimate sees at least: at momentum 0.9, 4% of the statistics
gathered in training are left after 30."""
MIN_CROP = 8
"""The least crop the vgg net's pooling takes down to one pixel."""
DEFAULT_CROP = {"vgg": 40, "seed": FACE_SIZE}
"""The seed net has a fixed input and validates on whole faces, so it takes no crop."""
EXTEND_LR = 0.02
"""The peak rate of an ``--extend`` cycle: a warm restart's, below a first cycle's 0.05."""
WARMUP_EPOCHS = 2.0
"""The warm-up of a run whose --epochs is 8 or more (the shipped model's 40 among them)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=home, help="FER-2013 CSV(.gz) or image folder")
    parser.add_argument("--out", required=True, type=made_path, help="output folder for model, card, plots, checkpoint")
    parser.add_argument("--arch", default="vgg", choices=("vgg", "seed"),
                        help="the network: vgg (the shipped model's) or seed (the first 4-layer CNN, a baseline)")
    parser.add_argument("--width", type=whole(1), default=32, help="channels of the first stage (vgg)")
    parser.add_argument("--dropout", type=number(0, 0.95), default=0.3, help="dropout before the classifier head")
    parser.add_argument("--epochs", type=whole(1), default=40, help="epochs of one schedule cycle")
    parser.add_argument("--batch-size", type=whole(1), default=128, help="faces per training step")
    parser.add_argument("--lr", type=number(0), default=0.05, help="peak learning rate (SGD, Nesterov)")
    parser.add_argument("--weight-decay", type=number(0), default=5e-4, help="L2 weight decay")
    parser.add_argument("--warmup-epochs", type=number(0), default=None,
                        help="epochs of linear learning-rate warm-up before the cosine decay, fewer than --epochs "
                             f"(default: {WARMUP_EPOCHS:g}, or a quarter of --epochs where that is fewer)")
    parser.add_argument("--label-smoothing", type=number(0, 1), default=0.1, help="label smoothing of the loss")
    parser.add_argument("--crop", type=whole(MIN_CROP, FACE_SIZE), default=None,
                        help="side of the random training crop; inference uses the centre crop "
                             f"(default: {DEFAULT_CROP['vgg']}; the seed net takes {FACE_SIZE} only)")
    parser.add_argument("--erase", type=number(0, 1), default=0.5, help="random-erasing probability")
    parser.add_argument("--seed", type=whole(0), default=1, help="random seed (weights, shuffling, augmentation)")
    parser.add_argument("--limit", type=whole(0), default=0,
                        help="use only N training and N//4 test rows, a sample drawn with --seed (smoke runs; 0: all)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT's checkpoint")
    parser.add_argument("--session-epochs", type=whole(1), default=None,
                        help="stop after this many epochs in this invocation; --resume goes on later "
                             "(default: no stop before the run's end)")
    parser.add_argument("--extend", type=whole(0), default=0, metavar="EPOCHS",
                        help="with --resume: train EPOCHS more as a new cosine cycle (a warm restart)")
    parser.add_argument("--extend-lr", type=number(0), default=None,
                        help=f"peak learning rate of the --extend cycle (default: {EXTEND_LR})")
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2),
                        help="Keras progress: 0 none, 1 a bar per step, 2 a line per epoch (default: 1 on a "
                             "terminal, else 2, as a log to a file takes it)")


def _steps_per_epoch(args: argparse.Namespace) -> int:
    return int(np.ceil(args.train_rows / args.batch_size))


def _this_command() -> str:
    """This invocation as a shell line, for the card's reproducing command."""
    return "fer-pipe train " + shlex.join(sys.argv[2:] if sys.argv[1:2] == ["train"] else sys.argv[1:])


def build_training_model(args: argparse.Namespace, cycles: list[dict]) -> keras.Model:
    """The net wrapped in training-only augmentation, compiled for ``cycles`` of the schedule."""
    import keras

    from . import nets

    net = _net_at(args, args.crop)
    aug = nets.augmenter(args.seed, args.erase)
    inputs = keras.Input((FACE_SIZE, FACE_SIZE, 1), name="face")
    x = keras.layers.RandomCrop(args.crop, args.crop, seed=args.seed, name="random_crop")(inputs) \
        if args.crop < FACE_SIZE else inputs
    outputs = net(aug(x))
    model = keras.Model(inputs, outputs, name="train")
    compile_for(model, args, cycles)
    return model


def compile_for(model: keras.Model, args: argparse.Namespace, cycles: list[dict]) -> None:
    """SGD with Nesterov momentum on the cosine cycles, label-smoothed cross-entropy."""
    import keras

    from .schedule import CosineCycles

    model.compile(
        optimizer=keras.optimizers.SGD(CosineCycles(cycles, _steps_per_epoch(args)), momentum=0.9, nesterov=True,
                                       weight_decay=args.weight_decay),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=args.label_smoothing),
        metrics=["accuracy"])


def extend(model: keras.Model, args: argparse.Namespace, state: dict) -> None:
    """Add a cosine cycle of ``args.extend`` epochs to a resumed run and recompile for it.

    The new optimizer starts at the run's step count, so the schedule picks up at the new
    cycle; the momentum buffers start from zero, which a warm restart tolerates.
    """
    state["cycles"].append({"epochs": args.extend, "lr": args.extend_lr, "warmup_epochs": 0.0})
    state["options"]["epochs"] = sum(cycle["epochs"] for cycle in state["cycles"])
    args.epochs = state["options"]["epochs"]
    compile_for(model, args, state["cycles"])
    model.optimizer.build(model.trainable_variables)
    model.optimizer.iterations.assign(state["epochs_done"] * _steps_per_epoch(args))


def _net_at(args: argparse.Namespace, size: int) -> keras.Model:
    """The vgg net is fully convolutional: it trains on crops and runs on whole faces."""
    from . import nets

    if args.arch == "vgg":
        return nets.vgg(args.width, args.dropout, size=None)
    return nets.seed(size=size)


def inference_model(train_model: keras.Model, crop: int) -> keras.Model:
    """Net behind a centre crop, taking the full 48x48 face: the model that ships."""
    import keras

    net = train_model.layers[-1]
    inputs = keras.Input((FACE_SIZE, FACE_SIZE, 1), name="face")
    x = keras.layers.CenterCrop(crop, crop, name="center_crop")(inputs) if crop < FACE_SIZE else inputs
    return keras.Model(inputs, net(x, training=False), name=net.name)


def centre(images: np.ndarray, crop: int) -> np.ndarray:
    """The centre ``crop`` x ``crop`` of 48x48 faces: what the shipped model's CenterCrop layer sees."""
    lo = (images.shape[1] - crop) // 2
    return images[:, lo:lo + crop, lo:lo + crop]


def recalibrate_batchnorm(net: keras.Model, images: np.ndarray, batch: int = 256, seed: int = 0) -> None:
    """Re-estimate every BatchNormalization's moving statistics on clean (unaugmented) faces.

    During training the moving averages follow augmented batches (erased patches of noise,
    rotations) and lag behind weights that move fast at a high learning rate; inference with
    them lost tens of accuracy points here. One pass over clean faces, with a short averaging
    window, gives statistics that match what the model sees in use; a small set (a ``--limit``
    smoke run) is passed over until ``RECALIBRATION_STEPS`` batches have been seen: under 256
    faces, the pass had no whole batch and changed nothing.
    """
    import keras

    norms = [layer for layer in net.layers if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.9
    batch, steps = min(batch, len(images)), 0
    rng = np.random.default_rng(seed)
    while steps < RECALIBRATION_STEPS:
        order = rng.permutation(len(images))
        for start in range(0, len(order) - batch + 1, batch):
            net(images[order[start:start + batch]], training=True)
            steps += 1
    for layer, momentum in zip(norms, saved):
        layer.momentum = momentum


def select_on_publictest(final: keras.Model, out: Path, state: dict, crop: int, x_train: np.ndarray,
                         x_test: np.ndarray, y_test: np.ndarray) -> keras.Model:
    """Recalibrate the final and the best-by-validation checkpoints, keep the better on PublicTest."""
    import keras

    candidates = {"final": final}
    best = state.get("best_epoch")
    if best is not None and best != state["epochs_done"]:
        if (out / "best.keras").exists():
            candidates["best"] = keras.models.load_model(out / "best.keras", safe_mode=True)
        else:  # deleted, or never copied (the shipped run's): the export changed without a word
            print(f"fer-pipe: train: {out / 'best.keras'}, epoch {best}'s weights (the best on PublicTest), is "
                  "missing: the final epoch is the only candidate, so the model may not be the one this run "
                  "exported before", file=sys.stderr)
    scores = {}
    for name, model in candidates.items():
        net = model.layers[-1]
        recalibrate_batchnorm(net, centre(x_train, crop))
        probs = net.predict(centre(x_test, crop), batch_size=256, verbose=0)
        scores[name] = float((probs.argmax(axis=1) == y_test).mean())
    picked = max(scores, key=scores.get)
    state["selection"] = {"publictest_accuracy_after_bn_recalibration": scores, "picked": picked,
                          "epoch": state["epochs_done"] if picked == "final" else state.get("best_epoch")}
    said = ", ".join(f"the {name} epoch's {score:.2%}" for name, score in scores.items())
    print(f"chosen on PublicTest after recalibration: {said}; the model keeps the {picked} epoch's weights",
          file=sys.stderr)
    return candidates[picked]


def _checked(args: argparse.Namespace) -> tuple[argparse.Namespace, dict | None]:
    """The arguments to train with (a resumed run's own options in place) and the state of the
    run to resume, if any; InputError for everything that can be wrong with them, found before
    the --out folder is made and before TensorFlow's import prints its start-up lines."""
    if not Path(args.data).exists():
        raise InputError(f"{args.data}: no such file or folder")
    if args.extend_lr is not None and not args.extend:  # it was ignored without a word (s68b 6)
        raise InputError(f"--extend-lr {args.extend_lr:g}: the rate of an --extend cycle, and no --extend of 1 or more "
                         "epochs is given")
    if args.extend and args.extend_lr == 0:  # a whole cycle at rate 0, in the card for good
        raise InputError("--extend-lr 0: the weights would never change")
    args.extend_lr = EXTEND_LR if args.extend_lr is None else args.extend_lr
    if Path(args.data).is_dir() and _inside(Path(args.out), Path(args.data)):
        # the --out made there was read as a split folder, and blamed as one (s68b 5)
        raise InputError(f"--out {args.out}: inside --data {args.data}, whose folders are read as the data's "
                         "splits; give a folder outside it")
    out = Path(args.out)
    state_path = out / STATE
    state = None
    if args.resume:
        if not state_path.exists():
            raise InputError(f"{out}: nothing to resume (no {STATE})")
        state = _read_state(state_path)
        args = _resumed(args, state, out)
    elif state_path.exists():
        raise InputError(f"{out}: holds a training run ({STATE}); --resume continues it, or give another --out "
                         "for a new one")
    if args.extend and not args.resume:
        raise InputError("--extend: adds a cycle to a run, so it needs --resume")
    if args.crop is None:
        args.crop = DEFAULT_CROP[args.arch]
    if args.warmup_epochs is None:  # a short run (--epochs 1, a smoke test) was all warm-up
        args.warmup_epochs = min(WARMUP_EPOCHS, args.epochs / 4)
    if state is None and args.warmup_epochs >= args.epochs:  # the rate would never reach its peak, nor decay
        raise InputError(f"--warmup-epochs {args.warmup_epochs:g}: must be fewer than --epochs ({args.epochs}), "
                         "or the whole run is warm-up")
    if state is None and not args.lr:
        raise InputError("--lr 0: the weights would never change")
    if args.arch == "seed" and args.crop != FACE_SIZE:
        raise InputError(f"--crop {args.crop}: the seed net takes whole {FACE_SIZE} px faces (--crop {FACE_SIZE})")
    if state is not None and args.extend and len(state.get("cycles", ())) > 1 and state["epochs_done"] < args.epochs:
        raise InputError(f"--extend: the run in {out} is at epoch {state['epochs_done']} of {args.epochs}, in the "
                         "cycle an earlier --extend added; --resume without --extend finishes it")
    if state is not None and not (out / CHECKPOINT).is_file():
        raise InputError(f"{out / CHECKPOINT}: no such file, so the run cannot resume")
    return args, state


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is in ``folder``, or is it; False where it cannot be resolved (a symlink
    loop, said by the folder's making: it was a RuntimeError traceback, s68e 4)."""
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):
        return False


STOPS = (signal.SIGTERM, signal.SIGHUP)
"""Signals that stop a training as a Ctrl-C does: a scheduler's time limit, ``timeout`` and
``docker stop`` send SIGTERM, and a closed ssh session SIGHUP. They killed it outright, without
a word, and one inside an epoch's save left best.keras holding a net its state did not name."""


def run(args: argparse.Namespace) -> int:
    """Train; a stop signal ends it as a Ctrl-C does (the same line, the files whole), with exit
    code 128 + its number. One the caller ignores (``nohup``'s SIGHUP) stays ignored."""
    came: list[int] = []
    # stdout is Keras's progress, a log: a reader gone (a tee that died, a terminal closed with no
    # SIGHUP) stopped the training, exit 0 or "Input/output error"; a file took a bar's
    # redraws and colours, 240 bytes a step
    hangup.guard_standard_streams(hangup.terminal_fds(), stdout_is_a_log=True)
    if args.verbose is None:
        args.verbose = 1 if sys.stdout.isatty() else 2

    def stop(signum: int, _frame: FrameType | None) -> None:
        came.append(signum)
        raise KeyboardInterrupt

    try:
        with handling([s for s in STOPS if signal.getsignal(s) is not signal.SIG_IGN], stop):
            return _run(args)
    except KeyboardInterrupt:
        if came:
            return 128 + came[0]
        raise


TRAINING_PACKAGES = ("tensorflow", "keras", "matplotlib")
"""What training needs beyond a run's packages: fer-pipe's ``train`` extra, which a pipeline
host does without (TensorFlow alone is 1.9 GB; a run's classifier needs ai-edge-litert)."""


def _needs_training_packages() -> None:
    """Said before anything is read or made; matplotlib's absence was found only at the report,
    after the last epoch."""
    missing = [name for name in TRAINING_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        named = " and ".join([", ".join(missing[:-1]), missing[-1]] if len(missing) > 1 else missing)
        raise UserError(f"train needs {named}, which {'is' if len(missing) == 1 else 'are'} not "
                        "installed here: pip install -e '.[train]' in a source checkout, pip install 'fer-pipe[train]' "
                        "otherwise")


def _run(args: argparse.Namespace) -> int:
    _needs_training_packages()
    args, state = _checked(args)
    out = Path(args.out)
    made = not out.exists()
    make_folder(out, "train: --out")
    cycles = len(state.get("cycles", ())) if state else 0  # before an --extend adds one
    held = False  # a folder made here but held by another run (two started together) is that run's
    try:
        with held_folder(out, "train: --out", "train"):  # two runs into one folder replaced each other's work
            held = True
            return _train(args, state, out, cycles)
    except (InputError, OutputError):
        if held and made and not (out / STATE).exists():  # a bad data file, a first epoch gone to NaN or a full disk: no
            shutil.rmtree(out)  # empty --out left behind; not another run's, refused by its lock (s63f 3)
        raise
    except _Said:
        raise
    except KeyboardInterrupt:  # said from what the folder holds: the data loading, TensorFlow starting, an epoch
        if (out / STATE).exists():
            at, again = _kept_at(out, cycles, args.extend)
            print(f"\nfer-pipe train: interrupted; {out} keeps the run at {at}, and {again} goes on from there",
                  file=sys.stderr)
        else:
            if held and made:
                shutil.rmtree(out)  # as a bad data file does: it left a folder of a lock file alone
            print("\nfer-pipe train: interrupted before its first epoch ended, so nothing was kept; the same "
                  "command starts it again", file=sys.stderr)
        raise


def _train(args: argparse.Namespace, state: dict | None, out: Path, cycles: int) -> int:
    state_path = out / STATE
    started = time.time()
    train, test = load_splits(args.data, "Training", "PublicTest")
    images = images_sha256(train, test) if Path(args.data).is_dir() else None
    if state is not None and state.get("images_sha256", images) != images:
        raise InputError(f"{args.data}: not the images the run in {out} trained on (the sha256 of their pixels and "
                         "labels differs)")
    publictest_rows = len(test)  # before --limit's sample: the card says whether it scored one
    if state is not None:  # a run begun before these were recorded: its data checked as it could be
        state.setdefault("publictest_rows", publictest_rows)
        if images and not state.get("images_sha256"):
            state["images_sha256"] = images
    if args.limit:
        train, test = train.sample(args.limit, args.seed), test.sample(publictest_sample(args.limit), args.seed)
    if state is not None and state["options"].get("train_rows", len(train)) != len(train):
        raise InputError(f"{args.data}: {len(train)} training rows, where the run in {out} trained on "
                         f"{state['options']['train_rows']}; a resumed run reads the data it started on (its "
                         "learning-rate schedule is sized for it)")  # all a folder run begun before images_sha256 has
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with output_shown_on_failure():  # logged before TensorFlow reads that, on every CPU-only machine: oneDNN,
        import keras  # "no cuda drivers", a cuInit "error"; ten lines over train's own, shown if the import fails
        import tensorflow as tf

        tf.config.list_physical_devices()

    from . import schedule  # noqa: F401  registers CosineCycles, which checkpoints name, before load_model

    args.train_rows = len(train)
    x_train, x_test = preprocess_dataset(train.images), preprocess_dataset(test.images)
    y_train = keras.utils.to_categorical(train.labels, len(EMOTIONS))
    y_test = keras.utils.to_categorical(test.labels, len(EMOTIONS))
    print(f"data: {len(train)} training rows, {len(test)} PublicTest rows from {args.data}",
          file=sys.stderr)

    keras.utils.set_random_seed(args.seed)
    if state is None:
        first = [{"epochs": args.epochs, "lr": args.lr, "warmup_epochs": args.warmup_epochs}]
        model = build_training_model(args, first)
        state = {"epochs_done": 0, "history": {}, "wall_s": 0.0, "cycles": first,
                 "command": _this_command(),
                 "data_sha256": sha256_of(Path(args.data)) if Path(args.data).is_file() else None,
                 "images_sha256": images,
                 "publictest_rows": publictest_rows,
                 "options": {k: v for k, v in vars(args).items() if k not in NOT_OPTIONS},
                 "runs": []}
    else:
        model = _load_checkpoint(out / CHECKPOINT, args, state, (x_test, y_test))
        state.setdefault("cycles", [{key: state["options"][key] for key in ("epochs", "lr", "warmup_epochs")}])
        state["command"] += " && " + _this_command()  # the card's command is every invocation of the run
        if args.extend:
            extend(model, args, state)
    state["runs"].append({"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "hardware": cpu_model(),
                          "from_epoch": state["epochs_done"], "argv": sys.argv[1:]})

    class Checkpoint(keras.callbacks.Callback):
        """Saves the whole training state after every epoch, and the best net by PublicTest, and
        ends a session at ``session_end``: fit is given the run's last epoch, so that its log
        counts the run's (a session's end given as fit's showed "Epoch 15/15" of a 40-epoch run)."""

        def __init__(self, session_end: int) -> None:
            super().__init__()
            self.epoch_started = time.time()
            self.session_end = session_end

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.epoch_started = time.time()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            losses = {key: float((logs or {}).get(key, 0.0)) for key in ("loss", "val_loss")}
            bad = next((f"{key} became {value}" for key, value in losses.items() if not np.isfinite(value)), "")
            if bad:  # before any save: NaN weights saved over the last good ones, then trained to the
                # end, and the export blamed a missing softmax, an hour and a half on (s63e 3)
                kept = (f"{out} keeps the run at {_kept_at(out, cycles, args.extend)[0]}" if state_path.exists()
                        else "nothing was kept")
                raise InputError(f"train: the {bad} in epoch {epoch + 1}, so the run stopped before saving it: "
                                 f"the learning rate (--lr {args.lr:g}) may be too high; {kept}")
            for key, value in (logs or {}).items():
                state["history"].setdefault(key, []).append(float(value))
            state["epochs_done"] = epoch + 1
            state["wall_s"] += time.time() - self.epoch_started
            val = float((logs or {}).get("val_accuracy", 0.0))
            better = val >= state.get("best_val_accuracy", -1.0)
            if better:
                state["best_val_accuracy"], state["best_epoch"] = val, epoch + 1
            with ctrl_c_held():
                try:
                    _save_whole(self.model, [out / CHECKPOINT, *([out / "best.keras"] if better else [])])
                    _write_state(state_path, state)
                except (InputError, OutputError) as exc:  # a full disk: what is kept, as other stops say (s68b 3)
                    if not state_path.exists():  # nets put in place before the state failed are this run's (s68e 7)
                        for net in (out / CHECKPOINT, out / "best.keras"):
                            net.unlink(missing_ok=True)
                        raise type(exc)(f"{exc}; nothing was kept") from None
                    at, again = _kept_at(out, cycles, args.extend)
                    raise type(exc)(f"{exc}; {out} keeps the run at {at}, and {again} goes on from there") from None
            if epoch + 1 >= self.session_end:
                self.model.stop_training = True

    if state["epochs_done"] < args.epochs:
        last = args.epochs if args.session_epochs is None else \
            min(args.epochs, state["epochs_done"] + args.session_epochs)
        model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs,
                  initial_epoch=state["epochs_done"], validation_data=(x_test, y_test),
                  shuffle=True, verbose=args.verbose, callbacks=[Checkpoint(last)])
    state["runs"][-1]["seconds"] = time.time() - started
    if state["epochs_done"] < args.epochs:  # a session of an unfinished run: nothing to ship yet
        _write_state(state_path, state)
        print(f"fer-pipe train: this session ended at epoch {state['epochs_done']} of {args.epochs}; {out} keeps "
              f"the run, and {_kept_at(out, cycles, args.extend)[1]} goes on", file=sys.stderr)
        return 0
    _export(model, args, state, out, cycles, x_train, x_test, test, started)
    print(f"wrote {out}", file=sys.stderr)
    return 0


def _export(model: keras.Model, args: argparse.Namespace, state: dict, out: Path, cycles: int,
            x_train: np.ndarray, x_test: np.ndarray, test: FerSplit, started: float) -> None:
    """Pick the net to ship, export it with its report into a staging folder and put that in
    place; a Ctrl-C says what the run folder keeps and how to go on."""
    from . import report

    published = False
    try:
        picked = select_on_publictest(model, out, state, args.crop, x_train, x_test, test.labels)
        state["runs"][-1]["seconds"] = time.time() - started
        calibration = x_train[np.random.default_rng(args.seed).choice(len(x_train), min(len(x_train), 2000),
                                                                         replace=False)]
        staging = out / EXPORTING
        shutil.rmtree(staging, ignore_errors=True)  # an export cut short
        staging.mkdir()
        report.export_and_report(inference_model(picked, args.crop), test, state, staging, calibration)
        with ctrl_c_held():  # a Ctrl-C as the export is put in place: raised once it is, and the state says so
            _publish(staging, out)
            _write_state(out / STATE, state)
            published = True
    except OSError as exc:  # a full disk: it said "No space left on device" and no file, or the copy's source
        if published:
            raise
        shutil.rmtree(out / EXPORTING, ignore_errors=True)  # what it made, off the full disk
        failed = exc.filename2 or exc.filename or out / EXPORTING
        at, again = _kept_at(out, cycles, args.extend)
        raise OutputError(f"train: --out {out}: the export could not write {failed} ({exc.strerror or exc}); {out} "
                          f"keeps the run at {at}, and {again} exports it") from None
    except KeyboardInterrupt:
        if published:  # it was said to be left for --resume to export, with the model in place
            print(f"\nfer-pipe train: interrupted once the model was exported: wrote {out}", file=sys.stderr)
        else:
            print(f"\nfer-pipe train: interrupted after its last epoch, while the model was chosen and exported; "
                  f"{out} keeps the run, and {_kept_at(out, cycles, args.extend)[1]} exports it", file=sys.stderr)
        raise _Said from None


def _load_checkpoint(path: Path, args: argparse.Namespace, state: dict,
                     validation: tuple[np.ndarray, np.ndarray]) -> keras.Model:
    """The run's checkpoint, checked to be its own: one copied in from another run (a sibling's,
    or best.keras to go on from the best epoch) trained on, saved over the run's, and then failed
    with a traceback at every later resume (another net), or ended its schedule far from the
    end (another step count); a file cut short was "File not found"."""
    import keras

    if not zipfile.is_zipfile(path):
        raise InputError(f"{path}: not a checkpoint this can resume (not a .keras zip file: cut short, or "
                         "another kind of file)")
    try:
        model = keras.models.load_model(path, safe_mode=True)
    except (OSError, ValueError, zipfile.BadZipFile, zlib.error) as exc:  # bad bytes inside the zip
        raise InputError(f"{path}: not a checkpoint this can resume ({one_line(str(exc))})") from None
    net = f"vgg{args.width}" if args.arch == "vgg" else "seed"
    held = [layer.name for layer in model.layers if isinstance(layer, keras.Model) and layer.name != "augment"]
    if held != [net]:
        raise InputError(f"{path}: not this run's checkpoint: it holds the net {', '.join(held) or 'of no name'}, "
                         f"where the run trains {net} (--arch, --width)")
    steps, expected = int(model.optimizer.iterations), state["epochs_done"] * _steps_per_epoch(args)
    if steps == expected + _steps_per_epoch(args):  # a SIGKILL, power cut or full disk between its save and the state's
        _recover_unsaved_epoch(path, state, steps, validation)
        return model
    if steps != expected:
        raise InputError(f"{path}: not this run's checkpoint: it is at training step {steps}, where the run's "
                         f"{state['epochs_done']} epoch(s) end at step {expected}")
    return model


def _recover_unsaved_epoch(checkpoint: Path, state: dict, steps: int, validation: tuple[np.ndarray, np.ndarray]) -> None:
    """Count the epoch a checkpoint one past the state holds, and name best.keras's epoch where it
    was saved with it: the state's best_epoch named the one before, whose weights were gone, and
    the export shipped these as it (s68e 1). Its score, lost with the state, is taken again: a
    later epoch scoring between the two replaced it (s68f 5)."""
    import keras

    state["epochs_done"] += 1
    best = checkpoint.with_name("best.keras")
    net = keras.models.load_model(best, safe_mode=True) if best.is_file() else None
    if net is not None and int(net.optimizer.iterations) == steps:
        state["best_epoch"] = state["epochs_done"]
        state["best_val_accuracy"] = float(net.evaluate(*validation, verbose=0, return_dict=True)["accuracy"])
    print(f"fer-pipe train: {checkpoint} is one epoch past {STATE} (the run was killed, or its state could not be "
          f"written, while it saved epoch {state['epochs_done']}); going on from the checkpoint, without that "
          "epoch's figures in the history", file=sys.stderr)


def _publish(staging: Path, out: Path) -> None:
    """Move a whole export into ``out``, the pipeline's model.tflite and its card.json last.
    Written in place, an export cut short mixed two models: a resumed run's new model.keras
    beside the old run's model.tflite and card, which evaluate and the pipeline took."""
    from .report import TFLITE_FILE

    for path in sorted(staging.iterdir(), key=lambda p: p.name in (TFLITE_FILE, "card.json")):
        os.replace(path, out / path.name)
    staging.rmdir()


def _resumed(args: argparse.Namespace, state: dict, out: Path) -> argparse.Namespace:
    """This invocation's arguments with the run's own options in their place, before the data is
    read: a resumed run trains on what it started on, on the schedule it started with. An option
    given here that differs from the run's is refused, not ignored: a ``--limit`` applied to the
    data under a schedule sized for the old limit trained at a learning rate of 0. One given at
    its default value cannot be told from one not given, and the run's stands."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    saved = {key: value for key, value in state["options"].items() if key not in NOT_OPTIONS | THIS_INVOCATION}
    for key, value in saved.items():
        given = getattr(args, key, value)
        if given != value and given != parser.get_default(key):
            raise InputError(f"--{key.replace('_', '-')} {given}: the run in {out} has {value}, and a resumed run "
                             "keeps its options (--extend adds epochs; another --out starts a new run)")
    digest = state.get("data_sha256")
    if digest and Path(args.data).is_dir():  # a folder of images: it went unchecked
        raise InputError(f"{args.data}: not the data the run in {out} trained on (that was a file)")
    if state.get("images_sha256") and Path(args.data).is_file():
        raise InputError(f"{args.data}: not the data the run in {out} trained on (that was a folder of images)")
    if digest and Path(args.data).is_file() and sha256_of(Path(args.data)) != digest:
        raise InputError(f"{args.data}: not the data the run in {out} trained on (its sha256 differs; a "
                         "gzipped or unzipped copy of the same rows differs too)")
    return argparse.Namespace(**{**vars(args), **saved})


def _read_state(path: Path) -> dict:
    """The saved state of a run to resume; InputError if it is not one (edited, or cut short
    by a tool other than this one, which writes it whole or not at all)."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a training state this can resume ({exc})") from None
    keys = {"options", "epochs_done", "history", "wall_s", "command", "runs"}
    if not isinstance(state, dict) or not keys <= state.keys():
        raise InputError(f"{path}: not a training state this can resume (keys missing)")
    return state


class _Said(KeyboardInterrupt):
    """A Ctrl-C whose line has been said, so that ``run`` says no other."""


def _kept_at(out: Path, cycles: int, extend: int) -> tuple[str, str]:
    """Where the run in ``out`` is as saved, and how to go on from it; ``cycles``: the run's
    learning-rate cycles before this invocation. Not as this invocation holds it: an --extend's
    cycle is saved with its first epoch, and a Ctrl-C before that was told of an epoch "1 of 3"
    of a run saved at 1 of 1. An --extend given again is refused once its cycle is saved,
    and adds the cycle anew before."""
    saved = _read_state(out / STATE)
    extended = extend and len(saved.get("cycles", ())) > cycles
    again = "the same command with --resume" + (", without --extend," if extended else "")
    return f"epoch {saved['epochs_done']} of {saved['options']['epochs']}", again


@contextlib.contextmanager
def ctrl_c_held() -> Iterator[None]:
    """A Ctrl-C meanwhile is raised once the block is done: an epoch's checkpoint, best net and
    state are saved together or not at all. Cut between them, the line said the run was kept at
    an epoch the state on disk had not reached, and best.keras held a net the state did not name.
    A SIGINT this process ignores (started with a shell's ``&``) stays ignored. A stop
    signal (``STOPS``) is held too, and handed to its own handler after."""
    with signals_held((signal.SIGINT, *STOPS)) as came:
        yield
    if came:
        signal.raise_signal(came[0])


def _save_whole(model: keras.Model, paths: list[Path]) -> None:
    """The net saved to each of ``paths``, each whole: a SIGTERM while best.keras was written in
    place left it empty, and every later resume ended in a traceback when it came to ship the
    best epoch. A full disk was "No space left on device", no file named, and the half-written
    copy left taking the space; one between two saves left best.keras holding an epoch the state
    did not name (s68b 4). So every one is written aside before any is put in place; a kill
    between two renames leaves the checkpoint an epoch past the state, which the resume mends
    (``_recover_unsaved_epoch``)."""
    drafts = {path: path.with_name(path.name + ".tmp.keras") for path in paths}
    try:
        for path, draft in drafts.items():
            model.save(draft)
        for path, draft in drafts.items():
            os.replace(draft, path)
    except OSError as exc:
        for draft in drafts.values():
            draft.unlink(missing_ok=True)
        raise cannot_write("train: --out", path, exc) from None


def _write_state(path: Path, state: dict) -> None:
    """Whole or not at all: a Ctrl-C or a full disk mid-write leaves the last state, not half of one."""
    write_whole(path, json.dumps(state, indent=1), "train: --out")
