"""CSV outputs keep every whole group of rows they wrote, and no part of one, when the disk fills;
they also feed a pipe (whose reader may leave early), and start again with the header when
rotated under a run.

The file size limit (``RLIMIT_FSIZE``) makes a write stop part-way through a group exactly as a
full disk does, without privileges; the end-to-end test fills a real tmpfs instead.
"""
from __future__ import annotations

import csv
import errno
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO, fer_pipe_on_small_tmpfs
from fault_plugin import assert_valid_prefix
from livetools import stop, wait_for

from fer_pipe.csvfile import CsvOutput
from fer_pipe.errors import InputError, OutputError

HEADER = ["frame", "face", "label"]
FILL = textwrap.dedent("""
    import resource, signal, sys
    from fer_pipe.csvfile import CsvOutput
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    out = CsvOutput(sys.argv[1], "csv", ["frame", "face", "label"])
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), resource.RLIM_INFINITY))
    frame = 0
    try:
        while True:
            out.write([[frame, face, "happy"] for face in range(3)])
            frame += 1
    except OSError as exc:
        print(frame, exc.errno)
""")


def test_a_write_cut_short_is_taken_back_to_the_last_whole_group(tmp_path):
    path = tmp_path / "out.csv"
    done = subprocess.run([sys.executable, "-c", FILL, str(path), "1000"], capture_output=True, text=True,
                          timeout=60, check=True)
    groups, code = map(int, done.stdout.split())
    assert code == errno.EFBIG and groups > 10
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n") and len(text) < 1000
    rows = list(csv.reader(text.splitlines()))
    assert rows == [HEADER, *([str(f), str(face), "happy"] for f in range(groups) for face in range(3))]


def test_a_full_disk_stops_the_run_with_whole_frames_in_the_csv(short_clip, tmp_path):
    """The csv sink on a 4 KiB tmpfs, in a private mount namespace: the run fails on the frame
    that does not fit, and the CSV ends with the frame before it."""
    full = tmp_path / "full"
    full.mkdir()
    out, copy = full / "out.csv", tmp_path / "out.csv"
    done = fer_pipe_on_small_tmpfs(full, "4k", "run", str(REPO / "configs" / "video_to_csv.yaml"), "--quiet",
                                   "--set", f"source.path={short_clip}", "--set", f"csv.path={out}",
                                   then=f"cp {out} {copy}")
    assert done.returncode == 1, done.stderr
    frames = assert_valid_prefix(copy)
    assert 0 < len(frames) < 60
    assert done.stderr == (f"fer-pipe: stage 'csv' (csv) failed: on source frame {len(frames)}: "
                           f"OSError: [Errno 28] No space left on device: '{out}'\n")


def test_a_pipe_takes_the_rows_too():
    """``--set csv.path=/dev/stdout`` feeds another program; a pipe cannot seek or be cut back."""
    write = ("from fer_pipe.csvfile import CsvOutput\n"
             "out = CsvOutput('/dev/stdout', 'csv', ['frame', 'face', 'label'])\n"
             "out.write([[0, 0, 'sad'], [0, 1, 'happy']])\nout.close()\n")
    done = subprocess.run([sys.executable, "-c", write], stdout=subprocess.PIPE, timeout=60, check=True)
    assert done.stdout == b"frame,face,label\r\n0,0,sad\r\n0,1,happy\r\n"


def test_a_reader_that_leaves_the_pipe_ends_the_run_cleanly(clips, tmp_path):
    """``csv.path=/dev/stdout | head``: the run stops as a ``q`` in the window stops it, exit
    0 and nothing on stderr, and the episodes sink beside it closes the episodes it holds."""
    episodes = tmp_path / "episodes.csv"
    run = subprocess.Popen([sys.executable, "-m", "fer_pipe.cli", "run", "episodes", "--quiet",
                            "--set", f"source.path={clips['WolfgangLanger_Pexels.mp4']}",
                            "--set", "csv.path=/dev/stdout", "--set", f"episodes.path={episodes}"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    lines = [run.stdout.readline() for _ in range(4)]
    run.stdout.close()
    stderr = run.communicate(timeout=120)[1].decode()
    assert run.returncode == 0, stderr
    assert stderr == ""
    assert [line.split(b",")[1] for line in lines] == [b"frame", b"0", b"1", b"2"]
    rows = list(csv.DictReader(episodes.open()))
    assert rows and int(rows[-1]["end_frame"]) < 471  # closed where the run stopped, not at the end


def test_a_reader_of_a_socket_for_stdout_that_leaves_ends_the_run_cleanly_too(short_clip, tmp_path):
    """Node's child_process, socat and journald give a program a socket for its stdout, whose
    reader gone reads as a hangup, not an error: only an error was taken for it, and such a
    reader leaving failed the run, exit 1 (s49h 1)."""
    import socket

    ours, theirs = socket.socketpair()
    with ours, theirs:
        run = subprocess.Popen([sys.executable, "-m", "fer_pipe.cli", "run", "video_to_csv", "--quiet",
                                "--set", f"source.path={short_clip}", "--set", "csv.path=/dev/stdout"],
                               stdout=theirs, stderr=subprocess.PIPE, cwd=tmp_path)
        theirs.close()
        header = ours.recv(6)
        ours.shutdown(socket.SHUT_RDWR)
        stderr = run.communicate(timeout=120)[1].decode()
    assert (header, run.returncode, stderr) == (b"source", 0, "")


def shell(script: str, cwd, clip, frames: int = 0) -> subprocess.CompletedProcess:
    """``script`` in bash, with ``$RUN`` a quiet fer-pipe run of ``clip`` (its first ``frames``,
    where given) whose csv sink is given by ``--set csv.path=...`` after it."""
    run = f"{sys.executable} -m fer_pipe.cli run video_to_csv --quiet --set source.path={clip}"
    if frames:
        run += f" --set source.max_frames={frames}"
    return subprocess.run(["bash", "-c", script], cwd=cwd, env={**os.environ, "RUN": run}, capture_output=True,
                          text=True, timeout=240)


def test_stdout_redirected_to_a_file_is_written_where_the_shell_is(short_clip, tmp_path):
    """A stdout redirected to a file was opened anew, locked and emptied: a loop of runs into
    one file kept the last run's rows alone, and `echo` lines around a run were overwritten
    (s47g). The rows go on where the shell has got to, header only into an empty file."""
    done = shell('for i in 1 2; do $RUN --set csv.path=/dev/stdout; done > all.csv && '
                 '{ echo before; $RUN --set csv.path=/dev/stdout; echo after; } > around.csv', tmp_path, short_clip,
                 frames=8)  # how the rows go on, not how many
    assert done.returncode == 0, done.stderr
    one = (tmp_path / "all.csv").read_text().splitlines()
    rows = one[1:len(one) // 2 + 1]
    assert rows and one == one[:1] + rows + rows and one[0].startswith("source,frame,")
    assert (tmp_path / "around.csv").read_text().splitlines() == ["before", *rows, "after"]


def test_stdout_redirected_onto_a_csv_is_continued_as_append_continues_one(short_clip, tmp_path):
    """`>>` onto a CSV had none of the checks `append: true` makes: a last row a killed run left in
    part had the first new row glued to it, and rows of other columns (an episodes CSV, a run
    with csv.extra) were mixed in without a word, exit 0 (s53c 1). The rows start on a line of
    their own, the part row left (cut, it could be a frame another run sharing the stream was
    writing: s53f 5); a CSV of other columns gets its rows after a warning, as the shell's stream
    is the shell's."""
    done = shell('$RUN --set csv.path=/dev/stdout > rows.csv && head -c -9 rows.csv > cut.csv && cp rows.csv one.csv '
                 '&& $RUN --set csv.path=/dev/stdout >> cut.csv && $RUN --set csv.path=/dev/stdout '
                 '--set csv.extra=[detected] >> rows.csv', tmp_path, short_clip, frames=8)
    assert done.returncode == 0, done.stderr
    first = (tmp_path / "one.csv").read_text().splitlines()
    assert (tmp_path / "cut.csv").read_text().splitlines() == first[:-1] + [first[-1][:-7]] + first[1:]
    assert (tmp_path / "rows.csv").read_text().splitlines()[len(first)].endswith(",True")  # the extra column's
    assert done.stderr.splitlines() == [
        "fer-pipe: WARNING: csv /dev/stdout: its last row has no line end (a run stopped mid-row?); the rows go on "
        "from a line of their own after it",
        "fer-pipe: WARNING: csv /dev/stdout: the file the run's output goes on in is a CSV with other columns "
        "(it lacks 'detected'); its rows go on after them, mixed"]
    # cut inside a quoted field (a source id with a comma): the line end went inside the quotes, and
    # the first new row into the part row's field (s53g 3)
    quoted = "--set 'source.source_id=cam, door' --set csv.path=/dev/stdout"
    done = shell(f'$RUN {quoted} > q.csv && L=$(tail -n 1 q.csv | wc -c) && head -c -$((L - 4)) q.csv > qc.csv '
                 f'&& $RUN {quoted} >> qc.csv', tmp_path, short_clip, frames=8)
    assert done.returncode == 0, done.stderr
    whole = list(csv.reader((tmp_path / "q.csv").open(newline="")))
    assert list(csv.reader((tmp_path / "qc.csv").open(newline=""))) == whole[:-1] + [["cam"]] + whole[1:]
    # cut between the \r and the \n of its last line end: the \n alone ends it, no blank row (s54a 4d)
    done = shell('head -c -1 one.csv > cr.csv && $RUN --set csv.path=/dev/stdout >> cr.csv', tmp_path, short_clip,
                 frames=8)
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "one.csv").read_bytes().split(b"\r\n")
    assert (tmp_path / "cr.csv").read_bytes().split(b"\r\n") == lines[:-1] + lines[1:]


def test_episodes_to_a_reader_gone_end_the_run_cleanly(short_clip, tmp_path):
    """The episodes an end closes are written in the sink's ``ended``: to `| head -n 1`, gone by
    then, the run failed with "BrokenPipeError", exit 1, where a frame's write ends it cleanly."""
    done = shell(f"{sys.executable} -m fer_pipe.cli run episodes --quiet --set source.path={short_clip} --set "
                 "csv.path=/dev/null --set episodes.path=/dev/stdout | head -n 1; exit ${PIPESTATUS[0]}", tmp_path,
                 short_clip)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith("source,track_id,label,")


def test_a_file_behind_stdout_is_locked_and_starts_again_after_a_copytruncate(clips, tmp_path):
    """Written through the run's own stdout, the file lost its lock: a second run given its path
    emptied it under the first, and a copytruncate left the rows after it behind a hole of zero
    bytes, where the shell's `>` does not append (s47h)."""
    shared = tmp_path / "shared.csv"
    with shared.open("w") as stdout:
        first = subprocess.Popen([sys.executable, "-m", "fer_pipe.cli", "run", "video_to_csv", "--quiet",
                                  "--set", f"source.path={clips['WolfgangLanger_Pexels.mp4']}",
                                  "--set", "source.realtime=true", "--set", "csv.path=/dev/stdout"],
                                 stdout=stdout, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: shared.read_bytes().count(b"\n") > 3, 120, "the first run's rows", first)
        second = shell(f"$RUN --set csv.path={shared}", tmp_path, clips["single_face.mp4"])
        assert (second.returncode, second.stderr) == (2, f"fer-pipe: stage 'csv' (csv): csv {shared}: another "
                                                         "process is writing it (a second run or shard with the "
                                                         "same path?); give each its own file\n")
        os.truncate(shared, 0)  # what logrotate's copytruncate does after copying
        wait_for(lambda: shared.read_bytes().count(b"\n") > 3, 120, "rows after the copytruncate", first)
    finally:
        stop(first, signal.SIGINT)
    lines = shared.read_bytes().split(b"\r\n")
    assert lines[0].startswith(b"source,frame,") and all(line[:7] == b"source," for line in lines[1:-1]), lines[:3]


def test_a_descriptor_the_stages_do_not_have_is_refused(short_clip, tmp_path):
    """`csv.path=/dev/fd/3 3>>rows.csv` wrote the rows to the stage process's own fd 3 (/dev/null
    there), exit 0, and a process substitution failed as "No such file or directory"."""
    done = shell("$RUN --set csv.path=/dev/fd/3 3>>rows.csv", tmp_path, short_clip)
    assert done.returncode == 2
    assert done.stderr == ("fer-pipe: stage 'csv' (csv): csv /dev/fd/3: a descriptor of the shell's, which "
                           "fer-pipe's stage processes do not have; give a file, /dev/stdout, or a named pipe "
                           "(mkfifo)\n")


def test_a_reader_gone_before_the_header_ends_the_run_cleanly_too(short_clip, tmp_path):
    """`| head -n 0`, or a reader that left in the run's first moments, failed the header's
    write: exit 1, where a reader that left later ended the run with exit 0."""
    done = shell("$RUN --set csv.path=/dev/stdout | head -n 0; exit ${PIPESTATUS[0]}", tmp_path, short_clip)
    assert (done.returncode, done.stderr) == (0, "")


def test_rows_after_a_copytruncate_start_the_emptied_file(tmp_path):
    """logrotate's copytruncate empties a file under a long run; the next rows must start it again,
    header first, not land at the old offset behind a hole of zero bytes."""
    path = tmp_path / "out.csv"
    with CsvOutput(path, "csv", HEADER) as out:
        out.write([[0, 0, "sad"], [1, 0, "sad"]])
        path.write_bytes(b"")  # what copytruncate does after copying
        out.write([[2, 0, "happy"]])
    assert path.read_bytes() == b"frame,face,label\r\n2,0,happy\r\n"


def test_a_copytruncate_between_the_look_at_the_size_and_the_write_leaves_the_header(tmp_path, monkeypatch):
    """The size is looked at, then the rows are written: a copytruncate in between (4 of 300 at
    1,400 events a second) put the rows first with no header, and every restart of a collector
    or an appending sink refused the file after (s49a 1). The truncation is put in that gap by
    hand, as no test can time it there."""
    path = tmp_path / "out.csv"
    with CsvOutput(path, "csv", HEADER) as out:
        out.write([[0, 0, "sad"]])
        looked = out._status

        def look_then_truncate():
            status = looked()
            path.write_bytes(b"")
            return status

        monkeypatch.setattr(out, "_status", look_then_truncate)
        out.write([[1, 0, "happy"], [1, 1, "sad"]])
    assert path.read_bytes() == b"frame,face,label\r\n1,0,happy\r\n1,1,sad\r\n"
    with CsvOutput(path, "csv", HEADER, append=True) as out:  # a restart takes the file up
        out.write([[2, 0, "fear"]])
    assert path.read_bytes().endswith(b"1,1,sad\r\n2,0,fear\r\n")


def test_rows_after_the_file_is_moved_away_or_deleted_go_to_the_path_again(tmp_path):
    """logrotate's create mode renames the file and makes an empty one; a tmp cleaner deletes it.
    Before, the rows went on into the renamed or deleted file, and the path stayed empty."""
    path, rotated = tmp_path / "out.csv", tmp_path / "out.csv.1"
    with CsvOutput(path, "csv", HEADER) as out:
        out.write([[0, 0, "sad"]])
        path.rename(rotated)
        path.touch()  # logrotate's create
        out.write([[1, 0, "happy"]])
        path.unlink()
        out.write([[2, 0, "fear"]])
    assert rotated.read_bytes() == b"frame,face,label\r\n0,0,sad\r\n"
    assert path.read_bytes() == b"frame,face,label\r\n2,0,fear\r\n"


def test_a_folder_gone_mid_run_is_an_output_failure_that_says_so(tmp_path):
    """The line was "cannot write: No such file or directory", exit 2 (bad input): a share
    unmounted or a tmp cleaner under a service is no mistake in its config, and a supervisor that
    gives up on 2 left the camera stopped."""
    folder = tmp_path / "out"
    folder.mkdir()
    path = folder / "rows.csv"
    with CsvOutput(path, "csv", HEADER) as out:
        out.write([[0, 0, "sad"]])
        folder.rename(tmp_path / "out.old")
        with pytest.raises(OutputError) as failed:
            out.write([[1, 0, "happy"]])
    assert str(failed.value) == (f"csv {path}: cannot write: its folder {folder} is gone (removed, renamed or "
                                 "unmounted during the run); the rows before went with it")
    assert (tmp_path / "out.old" / "rows.csv").read_bytes() == b"frame,face,label\r\n0,0,sad\r\n"


def test_a_working_folder_gone_mid_run_is_said_so_for_a_relative_path(tmp_path, monkeypatch):
    """The removed working folder still stats as a folder, so a relative CSV path was still
    "cannot write: No such file or directory", exit 2 (s43d)."""
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    with CsvOutput("rows.csv", "csv", HEADER) as out:
        out.write([[0, 0, "sad"]])
        (folder / "rows.csv").unlink()
        folder.rmdir()
        with pytest.raises(OutputError, match=r"^csv rows.csv: cannot write: its folder \. is gone"):
            out.write([[1, 0, "happy"]])


def test_appending_to_a_file_with_the_same_columns_given_as_a_tuple_continues_it(tmp_path):
    """The header was compared as given with the file's parsed list: a tuple (as the episodes
    sink's columns are) never matched, and every file to continue was refused."""
    path = tmp_path / "episodes.csv"
    with CsvOutput(path, "episodes", ("a", "b")) as out:
        out.write([(1, 2)])
    with CsvOutput(path, "episodes", ("a", "b"), append=True) as out:
        out.write([(3, 4)])
    assert path.read_text().splitlines() == ["a,b", "1,2", "3,4"]


def test_appending_to_a_file_excel_saved_with_a_byte_order_mark_continues_it(tmp_path):
    """Excel's "CSV UTF-8" and PowerShell's Export-Csv start the file with a BOM, and it was
    refused as "it lacks 'a'; it has '\\ufeffa' besides" (s50c 4), where train reads such files."""
    path = tmp_path / "episodes.csv"
    path.write_bytes(b"\xef\xbb\xbfa,b\r\n1,2\r\n")
    with CsvOutput(path, "episodes", ("a", "b"), append=True) as out:
        out.write([(3, 4)])
    assert path.read_bytes() == b"\xef\xbb\xbfa,b\r\n1,2\r\n3,4\r\n"


def test_appending_to_a_file_that_does_not_end_with_a_whole_line_starts_on_a_line_of_its_own(tmp_path, capfd):
    """A run cut off mid-row (a power loss) left a part row, and a header written by hand may
    lack its line end: the first new row was glued onto it, one corrupt row, exit 0."""
    path = tmp_path / "e.csv"
    with CsvOutput(path, "episodes", ("a", "b")) as out:
        out.write([(1, 2), (3, 4)])
    path.write_bytes(path.read_bytes()[:-3])  # "3,4\r\n" cut to "3,"
    with CsvOutput(path, "episodes", ("a", "b"), append=True) as out:
        out.write([(5, 6)])
    assert path.read_text().splitlines() == ["a,b", "1,2", "5,6"]
    assert capfd.readouterr().err == (f"fer-pipe: WARNING: episodes {path}: its last row has no line end, so "
                                      "it is taken as cut short (a run stopped mid-row, or an editor that drops a "
                                      "file's last line end?): 2 bytes dropped before continuing it\n")
    path.write_text("a,b")
    with CsvOutput(path, "episodes", ("a", "b"), append=True) as out:
        out.write([(7, 8)])
    assert path.read_text().splitlines() == ["a,b", "7,8"]
    assert capfd.readouterr().err == ""
    path.write_bytes(path.read_bytes() + b"9,\xff\xfe")  # a part row of bytes no UTF-8: the file was refused
    with CsvOutput(path, "episodes", ("a", "b"), append=True) as out:
        out.write([(1, 1)])
    assert path.read_text().splitlines() == ["a,b", "7,8", "1,1"]
    assert "4 bytes dropped before continuing it" in capfd.readouterr().err


@pytest.mark.parametrize("cut, kept, said", [
    (5, ["a,b", "1,2"], 6),  # inside a quoted field, after its line break: the field was left open
    (6, ["a,b", "1,2"], 5),  # just after that line break: the file ended in a line end, and no word was said
    (1, ["a,b", "1,2", "cam\nA,4"], 0)])  # between a whole row's \r and \n: the row was dropped
@pytest.mark.parametrize("rows_before", [0, 150_000], ids=["small", "over-the-tail-read"])
def test_appending_cuts_back_to_a_line_end_outside_quotes(tmp_path, capfd, cut, kept, said, rows_before):
    """A source id or a file name may hold a line break, inside a quoted field: a run cut off
    after it left the field open, and every row appended after was read as part of it. In a
    file over the MiB read from its end, the quotes before it count too; a quote in a row
    there (an id with a comma) leaves parity as it was."""
    path = tmp_path / "e.csv"
    with CsvOutput(path, "episodes", ("a", "b")) as out:
        out.write([(1, 2)] + [("c,1", 2)] * rows_before + [("cam\nA", 4)])
    kept = kept[:2] + ["c,1,2"] * rows_before + kept[2:]
    path.write_bytes(path.read_bytes()[:-cut])
    with CsvOutput(path, "episodes", ("a", "b"), append=True) as out:
        out.write([(5, 6)])
    assert [",".join(row) for row in csv.reader(path.open(newline=""))] == kept + ["5,6"]
    assert capfd.readouterr().err == (f"fer-pipe: WARNING: episodes {path}: its last row has no line end, so "
                                      "it is taken as cut short (a run stopped mid-row, or an editor that drops a "
                                      f"file's last line end?): {said} bytes dropped before continuing it\n"
                                      if said else "")


def test_a_restarted_live_run_continues_its_csv_and_episodes_with_append(short_clip, tmp_path):
    """A camera that gives up exits 2 so that a supervisor starts the run again; that run
    emptied the CSV and the episodes file as it opened them, and with them every row the
    shard had written. With append: true (configs/rtsp.yaml sets it) they are continued; a
    file of other columns is refused rather than mixed."""
    from conftest import fer_pipe

    config = REPO / "configs" / "episodes.yaml"
    frames, episodes = tmp_path / "frames.csv", tmp_path / "episodes.csv"
    sets = ["--set", f"source.path={short_clip}", "--set", f"csv.path={frames}", "--set", f"episodes.path={episodes}",
            "--set", "csv.append=true", "--set", "episodes.append=true"]
    first = fer_pipe("run", str(config), "--quiet", *sets)
    assert first.returncode == 0, first.stderr
    once = [frames.read_text().splitlines(), episodes.read_text().splitlines()]
    assert len(once[0]) == 61 and len(once[1]) >= 2
    again = fer_pipe("run", str(config), "--quiet", *sets)
    assert again.returncode == 0, again.stderr
    assert frames.read_text().splitlines() == once[0] + once[0][1:]
    assert episodes.read_text().splitlines() == once[1] + once[1][1:]
    columns = once[1][0].split(",")  # as many columns as it writes, two swapped: still another layout
    columns[5], columns[6] = columns[6], columns[5]
    episodes.write_text(",".join(columns) + "\n" + once[1][1] + "\n")
    refused = fer_pipe("run", str(config), "--quiet", *sets)
    assert (refused.returncode, refused.stderr) == (  # before any stage starts: it said "failed", from open
        2, f"fer-pipe: stage 'episodes' (episodes): episodes {episodes}: exists with other columns "
           "(the same ones in another order); give a new file\n")
    episodes.unlink()
    frames.write_text("a,b\n1,2\n")
    refused = fer_pipe("run", str(config), "--quiet", *sets)
    assert (refused.returncode, refused.stderr) == (
        2, f"fer-pipe: stage 'csv' (csv): csv {frames}: exists with other columns "
           "(it lacks 'source', 'frame', 'timestamp', 'face', 'x' and more; it has 'a', 'b' besides); give a new file\n")


def test_a_face_whose_probs_are_not_seven_fails_the_csv_sink_and_the_event(tmp_path):
    """A plug-in classifier's three probabilities gave CSV rows short of four columns, exit 0,
    and events with three of the seven."""
    import numpy as np

    from fer_pipe.events import frame_event
    from fer_pipe.inprocess import run_stage
    from fer_pipe.messages import Face, Packet

    for probs in ([0.2, 0.3, 0.5], [0.1] * 7 + [0.3]):  # eight, the largest past the seventh: an IndexError
        packet = Packet("cam", 0, 0.0, faces=[Face((0, 0, 10, 10), np.array(probs, np.float32))])
        said = r"a face's probs are array\(\[0\.[0-9, .\n]*\], dtype=float32\), not one probability for each of the 7 "
        with pytest.raises(ValueError, match=said):
            run_stage("csv", [packet], {"path": str(tmp_path / "o.csv")})
        with pytest.raises(ValueError, match=said):
            frame_event(packet)


def test_a_file_refused_for_appending_is_let_go_for_the_next_try(tmp_path):
    """A file whose end is no CSV kept its descriptor, and with it the lock, open: the same
    process (the API, run_stage, a Ray worker) given the mended file was told another process
    was writing it."""
    path = tmp_path / "e.csv"
    path.write_bytes(b'a,b\r\n"' + b"x" * (2**20 + 10))  # a quote left open for over the MiB read
    with pytest.raises(InputError, match="hold no line end outside quotes"):
        CsvOutput(path, "episodes", ("a", "b"), append=True)
    path.write_bytes(b"a,b\r\n1,2\r\n")
    with CsvOutput(path, "episodes", ("a", "b"), append=True) as out:
        out.write([(3, 4)])
    assert path.read_text().splitlines() == ["a,b", "1,2", "3,4"]


def test_rows_to_a_terminal_show_escape_codes_as_text_and_to_a_file_as_they_are(tmp_path):
    """``collect --csv /dev/stdout`` on a terminal wrote a network peer's source id raw, and its
    escape codes acted on the operator's terminal, where ``subscribe`` shows them (s49b 3)."""
    import pty

    row = [["cam\x1b[31mRED\x1b[0m", 0, None, 0.5]]
    leader, follower = pty.openpty()
    shown = b""
    try:
        with CsvOutput(os.ttyname(follower), "csv", HEADER) as out:
            out.write(row)
        os.close(follower)
        while chunk := _read_or_hung_up(leader):
            shown += chunk
    finally:
        os.close(leader)
    assert shown.replace(b"\r\r\n", b"\r\n") == b"frame,face,label\r\ncam\\x1b[31mRED\\x1b[0m,0,,0.5\r\n"
    with CsvOutput(tmp_path / "out.csv", "csv", HEADER) as out:
        out.write(row)
    assert (tmp_path / "out.csv").read_bytes() == b"frame,face,label\r\ncam\x1b[31mRED\x1b[0m,0,,0.5\r\n"


def _read_or_hung_up(fd: int) -> bytes:
    """What a pseudo-terminal's leader reads, or nothing once no follower is left (EIO)."""
    try:
        return os.read(fd, 4096)
    except OSError:
        return b""
