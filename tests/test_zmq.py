"""The zmq sink and `fer-pipe subscribe`, with real sockets on 127.0.0.1 and real pipeline runs."""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import yaml
import zmq
import zmq.auth
from conftest import REPO, fer_pipe, latin1_locale, read_frames, write_video
from livetools import bound_again, csv_rows, free_port, silencing_relay, start_fer_pipe, stop, wait_for

from fer_pipe.events import FACE_FIELDS as EVENT_FACE_FIELDS
from fer_pipe.errors import ConfigError, InputError
from fer_pipe.messages import EMOTIONS

FACE_FIELDS = {"face", "x", "y", "w", "h", "track_id", "label", "confidence", "probs"}


def write_config(path, video, endpoint, csv_path=None, **zmq_params):
    stages = {
        "source": {"type": "video", "params": {"path": str(video), "source_id": "cam1"}},
        "detector": {"type": "haar", "inputs": ["source"]},
        "classifier": {"type": "classifier", "inputs": ["detector"]},
        "events": {"type": "zmq", "inputs": ["classifier"], "params": {"endpoint": endpoint, **zmq_params}},
    }
    if csv_path:
        stages["csv"] = {"type": "csv", "inputs": ["classifier"], "params": {"path": str(csv_path)}}
    path.write_text(yaml.safe_dump({"stages": stages}))
    return path


def subscriber(ctx, endpoint, topic="", server_key=None, client=None):
    sock = ctx.socket(zmq.SUB)
    if server_key:
        sock.curve_serverkey = server_key
        sock.curve_publickey, sock.curve_secretkey = client
    sock.connect(endpoint)
    sock.setsockopt_string(zmq.SUBSCRIBE, topic)
    return sock


def drain(sock, quiet_ms=1500):
    """Every message waiting on ``sock``, until none arrives for ``quiet_ms``."""
    out = []
    while sock.poll(quiet_ms):
        out.append(sock.recv_multipart())
    return out


def test_subscribers_receive_every_event_of_a_file_run_in_the_documented_schema(short_clip, tmp_path):
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    csv_path = tmp_path / "rows.csv"
    # Two subscribers: plain pyzmq, and the CLI in CSV form. wait_subscribers=2 makes the run wait
    # until both subscriptions reached the publisher, so ZeroMQ's slow joiner cannot lose events.
    config = write_config(tmp_path / "g.yaml", short_clip, endpoint, csv_path, wait_subscribers=2, precision=7)
    graph = yaml.safe_load(config.read_text())
    graph["stages"]["csv"]["params"]["precision"] = 7
    config.write_text(yaml.safe_dump(graph))
    ctx = zmq.Context()
    sock = subscriber(ctx, endpoint, "emotion.cam1")
    cli = subprocess.Popen([sys.executable, "-m", "fer_pipe.cli", "subscribe", endpoint, "--format", "csv",
                            "--precision", "7"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        done = fer_pipe("run", str(config), "--quiet", timeout=180)
        assert done.returncode == 0, done.stderr
        messages = drain(sock)
    finally:
        sock.close(0)
        ctx.term()
        code = stop(cli, signal.SIGINT)
    cli_out, cli_err = (stream.decode() for stream in cli.communicate())
    assert code == 0 and "Traceback" not in cli_err, cli_err  # Ctrl-C ends subscribe cleanly

    rows = csv_rows(csv_path)
    with_faces = [r for r in rows if r["label"]]
    assert with_faces, "the clip has a face in most frames; the CSV shows none"
    events = [json.loads(body) for topic, body in messages]
    assert {m[0] for m in messages} == {b"emotion.cam1"}
    assert [e["frame"] for e in events] == sorted({int(r["frame"]) for r in with_faces})
    for event in events:
        assert {"schema", "type", "source", "frame", "timestamp", "faces"} <= set(event)  # additive changes keep v1
        assert (event["schema"], event["type"], event["source"]) == (1, "frame", "cam1")
        for face in event["faces"]:
            assert FACE_FIELDS <= set(face) and face["label"] in EMOTIONS
            assert tuple(face) == EVENT_FACE_FIELDS  # the names the sink's extra may not take
            assert list(face["probs"]) == list(EMOTIONS)
            assert math.isclose(sum(face["probs"].values()), 1.0, abs_tol=1e-3)
            assert face["confidence"] == max(face["probs"].values())
    # The same facts as the CSV sink, field for field.
    flat = [(e["frame"], f["x"], f["y"], f["w"], f["h"], f["label"], f["confidence"])
            for e in events for f in e["faces"]]
    assert flat == [(int(r["frame"]), int(r["x"]), int(r["y"]), int(r["w"]), int(r["h"]), r["label"],
                     float(r["confidence"])) for r in with_faces]
    # `fer-pipe subscribe --format csv` prints the CSV sink's rows, character for character, line
    # ends and the precision the sinks were given included.
    with open(csv_path, newline="", encoding="utf-8") as written:
        lines = written.read().splitlines(keepends=True)
    assert cli_out == "".join(lines[:1] + [line for line, row in zip(lines[1:], rows) if row["label"]])
    assert len(with_faces[0]["confidence"].split(".")[1]) == 7


@pytest.mark.parametrize("kind", ["zmq", "episodes"])
def test_a_publishing_sink_that_sends_nothing_still_reads_its_socket(kind, tmp_path):
    """libzmq frees what a subscriber that left held only as its socket is next used, and a sink
    used it only to send: subscribers that came and went all night in an empty room (a health
    check's ``subscribe --count 1``) grew it by 11 KB each (s63b 2). A subscription waiting on
    the socket shows it unread; a frame with no face to send now reads it."""
    from fer_pipe.inprocess import make_stage
    from fer_pipe.messages import Packet

    port = free_port()
    params = ({"endpoint": f"tcp://127.0.0.1:{port}"} if kind == "zmq"
              else {"path": str(tmp_path / "episodes.csv"), "publish": port})
    sink = make_stage(kind, params)
    sink.open()
    ctx = zmq.Context()
    try:
        sub = ctx.socket(zmq.SUB)
        sub.connect(f"tcp://127.0.0.1:{port}")
        sub.subscribe(b"")
        sock = sink._publisher._sock
        wait_for(lambda: sock.poll(100, zmq.POLLIN), 30, "the subscription to reach the sink")
        sink.consume(Packet("cam", 0, 0.0, faces=[]))
        assert not sock.poll(0, zmq.POLLIN)
    finally:
        sink.close()
        ctx.destroy(linger=0)


def test_heartbeat_for_frames_without_faces(clips, tmp_path):
    video = write_video(tmp_path / "empty.avi", read_frames(clips["no_face.mp4"], 20))
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    config = write_config(tmp_path / "g.yaml", video, endpoint, wait_subscribers=1, heartbeat_s=3600)
    ctx = zmq.Context()
    sock = subscriber(ctx, endpoint)
    try:
        done = fer_pipe("run", str(config), "--quiet", timeout=180)
        messages = drain(sock)
    finally:
        sock.close(0)
        ctx.term()
    assert done.returncode == 0, done.stderr
    # no faces anywhere: exactly one heartbeat in an hour-long period, for the first frame; then
    # the file's end, on its own topic: the run going quiet said nothing of it (s40b)
    assert [m[0] for m in messages] == [b"emotion.cam1", b"source.cam1"]
    events = [json.loads(m[1]) for m in messages]
    assert {k: events[0][k] for k in ("schema", "type", "source", "frame", "timestamp", "faces")} == \
           {"schema": 1, "type": "frame", "source": "cam1", "frame": 0, "timestamp": 0.0, "faces": []}
    assert events[1] == {"schema": 1, "type": "source_end", "source": "cam1", "frame": 19, "timestamp": 0.76}


def test_secret_keys_are_this_users_alone_from_the_moment_they_are_made(tmp_path, monkeypatch):
    """They were written with the usual umask (0644) and narrowed to 0600 after: another local
    user who opened one in between read it (3 times in 8 tries, s24e). The mode is read here as
    pyzmq's writer returns, before fer-pipe could narrow it."""
    import argparse
    import stat

    from fer_pipe.curve_keys import make_keys

    real, modes = zmq.auth.create_certificates, {}

    def create_and_look(folder, name):
        public, secret = real(folder, name)
        for path in (public, secret):
            modes[Path(path).name] = stat.S_IMODE(os.stat(path).st_mode)
        return public, secret

    monkeypatch.setattr(zmq.auth, "create_certificates", create_and_look)
    kept = os.umask(0o022)  # the usual umask, whatever the test runner's
    try:
        assert make_keys(argparse.Namespace(dir=str(tmp_path / "keys"))) == 0
    finally:
        os.umask(kept)
    assert modes["server.key_secret"] == modes["client.key_secret"] == 0o600, modes
    assert {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "keys").glob("*.key")} == {0o644}


def test_curve_subscriber_with_a_wrong_key_receives_nothing(short_clip, tmp_path):
    for name in ("right", "wrong"):
        assert fer_pipe("keys", str(tmp_path / name)).returncode == 0
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "client.key").write_bytes((tmp_path / "right" / "client.key").read_bytes())
    load = zmq.auth.load_certificate
    server_public, _ = load(tmp_path / "right" / "server.key")
    wrong_server, _ = load(tmp_path / "wrong" / "server.key")
    good_client = load(tmp_path / "right" / "client.key_secret")
    unknown_client = load(tmp_path / "wrong" / "client.key_secret")
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    config = write_config(tmp_path / "g.yaml", short_clip, endpoint, wait_subscribers=1,
                          curve_secret_key=str(tmp_path / "right" / "server.key_secret"),
                          curve_clients=str(allowed))
    ctx = zmq.Context()
    socks = {
        "good": subscriber(ctx, endpoint, "", server_public, good_client),
        "wrong server key": subscriber(ctx, endpoint, "", wrong_server, good_client),
        "unknown client key": subscriber(ctx, endpoint, "", server_public, unknown_client),
        "no CURVE": subscriber(ctx, endpoint),
    }
    try:
        done = fer_pipe("run", str(config), "--quiet", timeout=180)
        got = {name: drain(sock, 1000) for name, sock in socks.items()}
    finally:
        for sock in socks.values():
            sock.close(0)
        ctx.term()
    assert done.returncode == 0, done.stderr
    assert len(got["good"]) > 10
    assert {name: len(m) for name, m in got.items() if name != "good"} == \
           {"wrong server key": 0, "unknown client key": 0, "no CURVE": 0}


def test_endpoint_in_use_is_one_line_and_exit_2(short_clip, tmp_path):
    port = free_port()
    ctx = zmq.Context()
    taken = ctx.socket(zmq.PUB)
    taken.bind(f"tcp://127.0.0.1:{port}")
    try:
        done = fer_pipe("run", str(write_config(tmp_path / "g.yaml", short_clip, f"tcp://127.0.0.1:{port}")),
                        "--quiet", timeout=120)
    finally:
        taken.close(0)
        ctx.term()
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"fer-pipe: stage 'events' (zmq): zmq tcp://127.0.0.1:{port}: cannot bind: Address already in use"]


def test_a_subscription_over_4_kib_is_refused_and_does_not_count(capfd):
    """libzmq keeps a subscription in a trie at about a hundred bytes a byte: one of 10 MB from any
    local user took a sink to over 1 GB, and counted as a subscriber for wait_subscribers."""
    from fer_pipe.inprocess import make_stage

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    sink = make_stage("zmq", {"endpoint": endpoint, "wait_subscribers": 2, "wait_timeout_s": 2, "linger_s": 0})
    ctx = zmq.Context()
    hostile, plain = ctx.socket(zmq.XSUB), ctx.socket(zmq.XSUB)
    for sock, topic in ((hostile, b"x" * 10_000), (plain, b"emotion.cam1")):
        sock.connect(endpoint)
        sock.send(b"\x01" + topic)  # queued until the sink binds
    try:
        sink.open()  # waits its 2 s: of the two subscriptions it got, one was over the limit
        sink.close()
    finally:
        hostile.close(0)
        plain.close(0)
        ctx.term()
    assert "zmq sink 'zmq': 1 of 2 subscriptions after 2 s; publishing anyway" in capfd.readouterr().err


def test_ctrl_c_ends_the_wait_for_subscribers(short_clip, tmp_path):
    """The wait used to sit out its whole timeout (here 300 s) after a Ctrl-C."""
    csv_path, err_path = tmp_path / "out.csv", tmp_path / "stderr.txt"
    config = write_config(tmp_path / "g.yaml", short_clip, f"tcp://127.0.0.1:{free_port()}", csv_path,
                          wait_subscribers=1, wait_timeout_s=300)
    run = start_fer_pipe("run", str(config), "--quiet", stderr_path=err_path)
    try:
        wait_for(lambda: csv_rows(csv_path), 120, "the csv branch to write while the zmq sink waits", run)
        code = stop(run, signal.SIGINT, timeout=30)
    finally:
        stop(run)
    assert code == 130, err_path.read_text()
    assert "fer-pipe: interrupted: drained and closed" in err_path.read_text()


def test_a_wait_for_subscribers_longer_than_the_stall_timeout_is_not_a_stall(short_clip, tmp_path):
    """A consumer that starts a few minutes later: wait_timeout_s 300 failed the run at 120 s
    (--stall-timeout) as "no progress ... while opening (stalled)", blaming the sink."""
    config = write_config(tmp_path / "g.yaml", short_clip, f"tcp://127.0.0.1:{free_port()}", tmp_path / "out.csv",
                          wait_subscribers=1, wait_timeout_s=4)
    done = fer_pipe("run", str(config), "--quiet", "--stall-timeout", "1.5")
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == ["fer-pipe: zmq sink 'events': 0 of 1 subscriptions after 4 s; publishing anyway"]


@pytest.mark.parametrize("endpoint", ["tcp://0.0.0.0:5556", "tcp://*:5556", "tcp://192.0.2.1:5556"])
def test_binding_beyond_loopback_must_be_asked_for(tmp_path, endpoint):
    config = write_config(tmp_path / "g.yaml", tmp_path / "clip.avi", endpoint)
    refused = fer_pipe("validate", str(config))
    assert refused.returncode == 2 and "not a loopback address" in refused.stderr
    assert "public: true" in refused.stderr and "Traceback" not in refused.stderr
    assert fer_pipe("validate", str(config), "--set", "events.public=true").returncode == 0


def test_zmq_sink_drops_and_counts_instead_of_blocking(tmp_path, capfd):
    """In-process: a subscriber that never reads fills the high-water mark; sends go on, drops are counted."""
    from fer_pipe.inprocess import make_stage
    from fer_pipe.messages import Face, Packet

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    sink = make_stage("zmq", {"endpoint": endpoint, "sndhwm": 10, "wait_subscribers": 1, "linger_s": 0})
    ctx = zmq.Context()
    sock = subscriber(ctx, endpoint)
    sock.setsockopt(zmq.RCVHWM, 10)
    try:
        sink.open()
        face = Face((1, 2, 3, 4), np.full(7, 1 / 7))
        for i in range(20000):
            sink.consume(Packet("cam1", i, i / 25, faces=[face], captured=float(i)))
        sink.close()
    finally:
        sock.close(0)
        ctx.term()
    assert 0 < sink.dropped < 20000
    assert f"zmq sink 'zmq': {sink.dropped} of 20000 events dropped (subscribers too slow; sndhwm 10)" in \
        capfd.readouterr().err


def test_the_sinks_extra_adds_a_faces_extra_data_else_its_frames_to_each_face_of_an_event():
    """A plug-in's per-face score reached the CSV (csv.extra) but no event: a subscriber across
    the network could not see it. A key the frame alone has (image_folder's file) fills every
    face; one nobody has is null; a value JSON has no word for is its text, as in the CSV."""
    from fer_pipe.inprocess import make_stage
    from fer_pipe.messages import Face, Packet

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    sink = make_stage("zmq", {"endpoint": endpoint, "wait_subscribers": 1,
                              "extra": ["blur", "file", "none", "tracks", "since", "meta", "crop"]})
    ctx = zmq.Context()
    sock = subscriber(ctx, endpoint)
    try:
        sink.open()
        faces = [Face((1, 2, 3, 4), np.full(7, 1 / 7), extra={"blur": np.float32(0.5)}),
                 Face((9, 2, 3, 4), np.full(7, 1 / 7), extra={"blur": {1, 2}, "file": "own.png", "none": float("nan"),
                                                              "tracks": [1], "since": (29, np.float32(0.5)),
                                                              "meta": {"glasses": True, 3: [float("inf")]},
                                                              "crop": np.zeros((40, 40, 3), np.uint8)})]
        sink.consume(Packet("cam1", 0, 0.0, faces=faces, extra={"file": "a.png"}))
        sink.close()
        events = drain(sock)
    finally:
        sock.close(0)
        ctx.term()
    assert [{k: f[k] for k in ("face", "blur", "file", "none")} for f in json.loads(events[0][1])["faces"]] == [
        {"face": 0, "blur": 0.5, "file": "a.png", "none": None}, {"face": 1, "blur": "{1, 2}", "file": "own.png",
                                                                  "none": None}]
    # JSON's own arrays and objects: a list was sent as Python's text of it, "[1]" (s48k 2)
    assert {k: json.loads(events[0][1])["faces"][1][k] for k in ("tracks", "since", "meta")} == {
        "tracks": [1], "since": [29, 0.5], "meta": {"glasses": True, "3": [None]}}
    # past numpy's 1,000 printed items, its summary: a crop in full made an event past a
    # subscriber's 1 MiB, which ZeroMQ dropped without a word (s48l 2)
    assert json.loads(events[0][1])["faces"][1]["crop"].startswith("[[[0 0 0]")
    for taken in ("label", "source", "timestamp", "p_happy"):  # a face's source blanked the CSV rows' source
        with pytest.raises(ConfigError, match=f"params.extra: '{taken}' is a field of the event or a column of its "
                                              "rows already"):
            make_stage("zmq", {"extra": [taken]})


def test_numpy_frame_numbers_and_track_ids_go_out_as_json_numbers():
    """The stage contract takes numpy integers as frame numbers and track ids, and the csv sink
    wrote them; every JSON sink failed at frame 0 ("Object of type int64 is not JSON
    serializable") on a plug-in tracker that numbered faces with ``np.arange`` (s54d 1), and a
    float32 time kept its binary digits."""
    from fer_pipe.inprocess import make_stage
    from fer_pipe.messages import Face, Packet, outage, stream_ended

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    sink = make_stage("zmq", {"endpoint": endpoint, "wait_subscribers": 1})
    ctx = zmq.Context()
    sock = subscriber(ctx, endpoint)
    try:
        sink.open()
        sink.consume(Packet("cam1", np.int64(4), np.float32(0.16), faces=[Face((1, 2, 3, 4), np.full(7, 1 / 7),
                                                                               track_id=np.arange(3)[2])]))
        sink.outage(outage("cam1", np.int64(4), np.float32(0.36)))
        sink.ended(stream_ended("cam1", np.int64(4), np.float32(0.16)))
        sink.close()
        events = [json.loads(body) for _, body in drain(sock)]
    finally:
        sock.close(0)
        ctx.term()
    # a float32 time rounded as float32 went out as 0.1599999964237213 (s54f 5)
    assert [(e["type"], e["frame"], e["timestamp"]) for e in events] == [("frame", 4, 0.16), ("source_down", 4, 0.36),
                                                                         ("source_end", 4, 0.16)]
    assert events[1]["since"] == 0.36
    assert events[0]["faces"][0]["track_id"] == 2


def test_a_live_sources_outage_is_said_once_on_its_own_topic_and_its_return_too():
    """While a camera was down no event came (a heartbeat goes with a frame): a subscriber could
    not tell a camera that is down from a run that has died (s28a). The source sends an outage
    packet about every second; one source_down goes out per outage, and source_up with the next
    frame. A subscriber of emotion.cam1 alone gets neither."""
    from fer_pipe.inprocess import run_stage
    from fer_pipe.messages import Face, Packet, outage

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    ctx = zmq.Context()
    every, frames_only = subscriber(ctx, endpoint), subscriber(ctx, endpoint, "emotion.cam1")
    face = [Face((1, 2, 3, 4), np.full(7, 1 / 7))]
    packets = [Packet("cam1", 0, 10.0, faces=face), outage("cam1", 0, 15.0), outage("cam2", 4, 15.5),
               outage("cam1", 0, 16.0), Packet("cam1", 1, 17.0, faces=face), outage("cam1", 1, 23.0)]
    try:
        run_stage("zmq", packets, {"endpoint": endpoint, "wait_subscribers": 2})
        said = [(topic.decode(), json.loads(body)) for topic, body in drain(every)]
        frames = drain(frames_only)
    finally:
        every.close(0)
        frames_only.close(0)
        ctx.term()
    assert [(topic, e["type"], e["source"], e["frame"], e["timestamp"]) for topic, e in said] == [
        ("emotion.cam1", "frame", "cam1", 0, 10.0), ("source.cam1", "source_down", "cam1", 0, 15.0),
        ("source.cam2", "source_down", "cam2", 4, 15.5), ("source.cam1", "source_up", "cam1", 1, 17.0),
        ("emotion.cam1", "frame", "cam1", 1, 17.0), ("source.cam1", "source_down", "cam1", 1, 23.0)]
    assert all(e["schema"] == 1 for _, e in said)
    # when each outage was first said: per source, and anew for cam1's second outage
    assert [e.get("since") for _, e in said] == [None, 15.0, 15.5, 15.0, None, 23.0]
    assert [json.loads(body)["frame"] for _, body in frames] == [0, 1]


def test_a_source_that_ends_is_said_to_have_ended_on_its_own_topic():
    """A file read to its end went quiet as a run that hangs does (s40b): its end is said, with its
    last frame, while another source may run on."""
    from fer_pipe.inprocess import run_stage
    from fer_pipe.messages import Face, Packet, stream_ended

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    ctx = zmq.Context()
    sock = subscriber(ctx, endpoint, "source.")
    face = [Face((1, 2, 3, 4), np.full(7, 1 / 7))]
    packets = [Packet("cam1", 0, 0.0, faces=face), Packet("cam2", 0, 0.0, faces=face),
               stream_ended("cam1", 0, 0.04), Packet("cam2", 1, 0.08, faces=face), stream_ended("cam2", 1, 0.08)]
    try:
        run_stage("zmq", packets, {"endpoint": endpoint, "wait_subscribers": 1})
        said = [(topic.decode(), json.loads(body)) for topic, body in drain(sock)]
    finally:
        sock.close(0)
        ctx.term()
    assert said == [("source.cam1", {"schema": 1, "type": "source_end", "source": "cam1", "frame": 0, "timestamp": 0.04}),
                    ("source.cam2", {"schema": 1, "type": "source_end", "source": "cam2", "frame": 1, "timestamp": 0.08})]


def test_with_a_heartbeat_a_source_that_stays_down_is_said_down_again():
    """Said once per outage, a subscriber that connected during it heard nothing, as from a run
    that has died (s29b). With heartbeat_s, every outage packet that comes a heartbeat after the
    last event of its source says it again (here each one: the heartbeat is a microsecond)."""
    from fer_pipe.inprocess import run_stage
    from fer_pipe.messages import outage

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    ctx = zmq.Context()
    sock = subscriber(ctx, endpoint, "source.")
    try:
        run_stage("zmq", [outage("cam1", -1, 5.0), outage("cam1", -1, 6.0), outage("cam1", -1, 7.0)],
                  {"endpoint": endpoint, "wait_subscribers": 1, "heartbeat_s": 1e-6})
        said = [json.loads(body) for _, body in drain(sock)]
    finally:
        sock.close(0)
        ctx.term()
    assert [(e["type"], e["frame"], e["timestamp"]) for e in said] == [
        ("source_down", None, 5.0), ("source_down", None, 6.0), ("source_down", None, 7.0)]


@pytest.mark.parametrize("gap_s, beat_s, said", [(0.999, 1, [5, 6, 7, 8, 9, 10]), (1.001, 1, [5, 6, 7, 8, 9, 10]),
                                                  (0.999, 2, [5, 7, 9]), (1.0, 2.6, [5, 8])])
def test_a_source_said_down_again_is_said_at_the_outage_packet_nearest_each_beat(monkeypatch, gap_s, beat_s, said):
    """Outage packets come about every second: with heartbeat_s 1, one handled a millisecond
    short of the beat waited for the next, and a subscriber heard nothing for 2 s (s29c). The
    sink's clock is set here to what the queues' jitter makes of a second."""
    from fer_pipe.inprocess import run_stage
    from fer_pipe.messages import outage
    from fer_pipe import outage_notices

    ticks = iter(range(1000))
    monkeypatch.setattr(outage_notices, "time", SimpleNamespace(monotonic=lambda: 1000.0 + gap_s * next(ticks)))
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    ctx = zmq.Context()
    sock = subscriber(ctx, endpoint, "source.")
    try:
        run_stage("zmq", [outage("cam", -1, 5.0 + i) for i in range(6)],
                  {"endpoint": endpoint, "wait_subscribers": 1, "heartbeat_s": beat_s})
        events = [json.loads(body) for _, body in drain(sock)]
    finally:
        sock.close(0)
        ctx.term()
    assert [e["timestamp"] for e in events] == said
    assert {e["since"] for e in events} == {5.0}  # when this outage was first said, in every repeat


def test_a_camera_down_from_the_start_is_said_down_on_zeromq(plugin_env, tmp_path):
    """A camera that sent no frame since the run started sent no outage packet, so no
    source_down went out: the usual case after a supervisor restarts a run that gave up (s29b).
    A real rtsp source on a port where nothing listens."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    config = tmp_path / "cam.yaml"
    config.write_text(yaml.safe_dump({"stages": {
        "cam": {"type": "rtsp", "params": {"url": f"rtsp://127.0.0.1:{free_port()}/x", "timeout_s": 1,
                                           "backoff_initial_s": 0.2, "backoff_max_s": 0.5, "give_up_after_s": 3}},
        "faulty": {"type": "faulty", "inputs": ["cam"]},
        "events": {"type": "zmq", "inputs": ["faulty"], "params": {"endpoint": endpoint, "wait_subscribers": 1}}}}))
    ctx = zmq.Context()
    sock = subscriber(ctx, endpoint, "source.cam")
    try:
        done = fer_pipe("run", str(config), "--quiet", env=plugin_env, timeout=120)
        said = [(topic.decode(), json.loads(body)) for topic, body in drain(sock, quiet_ms=500)]
    finally:
        sock.close(0)
        ctx.term()
    assert done.returncode == 2, done.stderr
    assert said and said[0][0] == "source.cam", said
    assert [(e["type"], e["frame"]) for _, e in said] == [("source_down", None)]


def test_a_subscriber_frozen_without_closing_its_connection_stops_blocking_the_others(tmp_path):
    """A subscriber process stopped with SIGSTOP (as a suspended laptop or a partition leaves
    it) keeps its connection open and its queue full: every send failed (XPUB_NODROP), for the
    healthy subscriber too, until TCP gave up, minutes later. Unanswered pings now drop it, so
    what is sent once the heartbeat must have run (10 s: a ping within 2 s, 6 s unanswered,
    2 s to spare) reaches the healthy subscriber. Before, nothing sent after about 1 s did."""
    from fer_pipe.inprocess import make_stage
    from fer_pipe.messages import Face, Packet
    from fer_pipe.endpoints import PEER_TIMEOUT_MS

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    sink = make_stage("zmq", {"endpoint": endpoint, "sndhwm": 10, "wait_subscribers": 2, "linger_s": 0})
    frozen = subprocess.Popen([sys.executable, "-m", "fer_pipe.cli", "subscribe", endpoint],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ctx = zmq.Context()
    healthy = subscriber(ctx, endpoint)
    # large events (40 faces, about 12 KB) fill the frozen subscriber's socket buffers within
    # a second even on a slow machine, well before the heartbeat can drop it
    faces = [Face((1, 2, 3, 4), np.full(7, 1 / 7))] * 40
    settled_s = PEER_TIMEOUT_MS * 4 / 3 / 1000 + 2
    settled_at, latest_seen, deadline = None, -1, time.monotonic() + 60
    try:
        sink.open()
        frozen.send_signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        i = 0
        while time.monotonic() < deadline and (settled_at is None or latest_seen < settled_at):
            sink.consume(Packet("cam1", i, i / 25, faces=faces, captured=float(i)))
            if settled_at is None and time.monotonic() - frozen_at > settled_s:
                settled_at = i
            while healthy.poll(0):
                latest_seen = json.loads(healthy.recv_multipart()[-1])["frame"]
            i += 1
            time.sleep(0.0005)
        sink.close()
    finally:
        frozen.send_signal(signal.SIGCONT)
        stop(frozen)
        healthy.close(0)
        ctx.term()
    assert sink.dropped > 0  # the frozen subscriber's full queue did block the sends for a while
    assert settled_at is not None and latest_seen >= settled_at, (settled_at, latest_seen)


def test_shipped_live_configs_validate():
    done = fer_pipe("validate", "configs/webcam.yaml", "configs/rtsp.yaml", "configs/video_to_zmq.yaml",
                    "configs/demo.yaml", cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "video_to_zmq.yaml: ok (4 stages: source -> detector -> classifier -> events)" in done.stdout
    # the wiring, each edge once: csv and annotated both read the classifier (one chain of the
    # order, "... -> csv -> annotated", showed an edge that is not there)
    assert "demo.yaml: ok (5 stages: source -> detector -> classifier -> csv; classifier -> annotated)" in done.stdout


def test_a_public_bind_without_curve_warns(capfd):
    """``lo`` is an interface name ZeroMQ binds to: not an address the sink can prove is loopback,
    so it needs public: true and warns, while nothing actually listens beyond this machine."""
    from fer_pipe.inprocess import make_stage

    endpoint = f"tcp://lo:{free_port()}"
    sink = make_stage("zmq", {"endpoint": endpoint, "public": True, "linger_s": 0})
    sink.open()
    sink.close()
    warning = capfd.readouterr().err.strip()
    assert warning == (f"fer-pipe: WARNING: zmq sink 'zmq' binds {endpoint} without CURVE keys: anyone who "
                       "can reach this address reads the events, unencrypted")


def test_a_wrong_key_file_is_one_line_before_anything_runs_on_both_sides(short_clip, tmp_path):
    """The public .key given as the sink's secret key used to pass the check and fail in the
    stage's process after the run had started; subscribe called a missing file "not a CURVE key
    file: Invalid certificate file"."""
    assert fer_pipe("keys", str(tmp_path / "keys")).returncode == 0
    public = tmp_path / "keys" / "server.key"
    done = fer_pipe("run", "configs/video_to_zmq.yaml", "--quiet", "--set", f"source.path={short_clip}",
                    "--set", f"events.curve_secret_key={public}", "--set", f"events.endpoint=tcp://127.0.0.1:{free_port()}",
                    cwd=REPO, timeout=120)
    assert (done.returncode, done.stderr) == (2, f"fer-pipe: stage 'events' (zmq): curve_secret_key {public}: holds no "
                                                 "secret key (give the .key_secret file, not the .key)\n")
    missing = tmp_path / "keys" / "nope.key"
    done = fer_pipe("subscribe", f"tcp://127.0.0.1:{free_port()}", "--server-key", str(missing),
                    "--client-keys", str(tmp_path / "keys" / "client.key_secret"), timeout=60)
    assert (done.returncode, done.stderr) == (2, f"fer-pipe: --server-key {missing}: no such file\n")
    fifo = tmp_path / "keys" / "fifo.key"
    os.mkfifo(fifo)  # was "is a folder"
    done = fer_pipe("subscribe", f"tcp://127.0.0.1:{free_port()}", "--server-key", str(public),
                    "--client-keys", str(fifo), timeout=60)  # which of the two files: the line names its option
    assert (done.returncode, done.stderr) == (2, f"fer-pipe: --client-keys {fifo}: not a regular file\n")


def test_curve_clients_must_be_a_folder_with_client_keys(tmp_path):
    """The client.key file itself given as curve_clients passed the check; pyzmq only logged
    that it could not read it and refused every subscriber, while the sink counted events sent."""
    from fer_pipe.inprocess import make_stage

    assert fer_pipe("keys", str(tmp_path / "keys")).returncode == 0
    keys, empty = tmp_path / "keys", tmp_path / "empty"
    empty.mkdir()
    for clients, reason in [(keys / "client.key", "is a file; curve_clients names a folder of client public keys"),
                            (empty, "holds no client public key (*.key); no subscriber could connect"),
                            (tmp_path / "none", "no such folder; curve_clients names a folder")]:
        stage = make_stage("zmq", {"curve_secret_key": str(keys / "server.key_secret"),
                                   "curve_clients": str(clients)})
        with pytest.raises(InputError, match=re.escape(f"{clients}: {reason}")):
            type(stage).preflight(stage.params)


def _cut_key(path: Path, half: str) -> Path:
    """A copy of the key file with its ``half``-key one character short, as a paste that lost one."""
    text = re.sub(rf'({half}-key = "[^"]*)."', r'\1"', path.read_text())
    cut = path.with_name("cut" + path.suffix)
    cut.write_text(text)
    cut.chmod(0o600)
    return cut


def test_a_damaged_key_is_one_line_naming_its_file_on_both_sides(short_clip, tmp_path):
    """A key cut short, or in hex, passed load_keys and reached setsockopt: the run said "stage
    'events' (zmq) failed: while opening: ZMQError: Invalid argument", naming no file, exit 1;
    subscribe ended in a traceback; and an allow-list whose only key was cut short refused every
    subscriber in silence (s51b 1)."""
    from fer_pipe.inprocess import make_stage

    assert fer_pipe("keys", str(tmp_path / "keys")).returncode == 0
    keys = tmp_path / "keys"
    secret = _cut_key(keys / "server.key_secret", "secret")
    done = fer_pipe("run", "configs/video_to_zmq.yaml", "--quiet", "--set", f"source.path={short_clip}",
                    "--set", f"events.curve_secret_key={secret}", cwd=REPO, timeout=120)
    assert (done.returncode, done.stderr) == (2, f"fer-pipe: stage 'events' (zmq): curve_secret_key {secret}: its "
                                                 "secret-key is not a 40-character Z85 key (cut short or changed? "
                                                 "make a new pair with fer-pipe keys)\n")
    server = _cut_key(keys / "server.key", "public")
    done = fer_pipe("subscribe", f"tcp://127.0.0.1:{free_port()}", "--server-key", str(server),
                    "--client-keys", str(keys / "client.key_secret"), timeout=60)
    assert (done.returncode, done.stderr) == (2, f"fer-pipe: --server-key {server}: its public-key is not a "
                                                 "40-character Z85 key (cut short or changed? make a new pair with "
                                                 "fer-pipe keys)\n")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "client.key").write_text(_cut_key(keys / "client.key", "public").read_text())
    stage = make_stage("zmq", {"curve_secret_key": str(keys / "server.key_secret"), "curve_clients": str(allowed)})
    with pytest.raises(InputError, match=re.escape(f"curve_clients {allowed / 'client.key'}: its public-key is not")):
        type(stage).preflight(stage.params)


def test_a_key_given_for_its_file_is_not_echoed(tmp_path):
    """The key text pasted where its file is meant was printed back, into journald under
    systemd, with "no such file" (s51b 5)."""
    assert fer_pipe("keys", str(tmp_path / "keys")).returncode == 0
    key = zmq.auth.load_certificate(tmp_path / "keys" / "client.key_secret")[1].decode()
    done = fer_pipe("subscribe", f"tcp://127.0.0.1:{free_port()}", "--server-key", str(tmp_path / "keys" / "server.key"),
                    f"--client-keys={key}", timeout=60)  # joined: 1 key in 85 begins with "-", an option to argparse
    said = ("no such file, and the name given is 40 characters of Z85, as a key is: not shown, should it be one; give "
            "the path of the key file fer-pipe keys wrote")
    assert (done.returncode, done.stderr) == (2, f"fer-pipe: --client-keys: {said}\n")
    dashed = "-" + key[1:]  # taken for an option: "expected one argument" alone did not say why (s58a 6)
    done = fer_pipe("subscribe", f"tcp://127.0.0.1:{free_port()}", "--server-key", str(tmp_path / "keys" / "server.key"),
                    "--client-keys", dashed, timeout=60)
    assert (done.returncode, done.stderr) == (2, "fer-pipe: argument --client-keys: expected one argument (a value that "
                                                 "begins with '-' is given as --client-keys=VALUE) (see fer-pipe "
                                                 "subscribe --help)\n")
    slashed = "/" + key[1:]  # a key beginning with / as if in the root folder, which is there (s51f 2)
    done = fer_pipe("subscribe", f"tcp://127.0.0.1:{free_port()}", "--server-key", str(tmp_path / "keys" / "server.key"),
                    "--client-keys", slashed, timeout=60)
    assert (done.returncode, done.stderr) == (2, f"fer-pipe: --client-keys: {said}\n")
    path = str(tmp_path / "keys" / "nope.key")  # no key: the path is shown
    done = fer_pipe("subscribe", f"tcp://127.0.0.1:{free_port()}", "--server-key", path,
                    "--client-keys", str(tmp_path / "keys" / "client.key_secret"), timeout=60)
    assert (done.returncode, done.stderr) == (2, f"fer-pipe: --server-key {path}: no such file\n")


def test_a_secret_key_others_can_read_or_given_as_the_server_key_is_warned_of(tmp_path, capfd):
    """A world-readable secret key, and the publisher's secret file given to a subscriber as
    --server-key (its secret then on the subscriber's host), were used without a word (s51b 7)."""
    from fer_pipe.curve_keys import load_keys

    assert fer_pipe("keys", str(tmp_path / "keys")).returncode == 0
    secret = tmp_path / "keys" / "server.key_secret"
    load_keys(str(secret), secret=True, what="curve_secret_key")
    assert capfd.readouterr().err == ""
    secret.chmod(0o644)
    load_keys(str(secret), secret=True, what="curve_secret_key")
    assert capfd.readouterr().err == (f"fer-pipe: WARNING: curve_secret_key {secret} can be read by others (mode "
                                      f"0644); a secret key should be its owner's alone: chmod 600 {secret}\n")
    load_keys(str(secret), secret=False, what="--server-key", warn=True)
    assert capfd.readouterr().err == (f"fer-pipe: WARNING: --server-key {secret} holds a secret key, which only its "
                                      "owner should have; give the public key file (server.key) instead\n")


def test_keys_never_overwrites_a_key_or_writes_through_a_link(tmp_path):
    """Only the secret files were looked for: a server.key copied in from the publisher was
    replaced by a new, unrelated one without a word, and a link's target was overwritten and
    made world-readable (s51b 4)."""
    host = tmp_path / "subscriber"
    host.mkdir()
    (host / "server.key").write_text("the publisher's public key\n")
    done = fer_pipe("keys", str(host))
    assert (done.returncode, done.stderr) == (2, f"fer-pipe: keys {host / 'server.key'}: already exists; choose "
                                                 "another folder\n")
    assert (host / "server.key").read_text() == "the publisher's public key\n"
    assert not (host / "client.key_secret").exists()
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "client.key_secret").symlink_to(tmp_path / "elsewhere")
    done = fer_pipe("keys", str(linked))
    assert done.returncode == 2 and not (tmp_path / "elsewhere").exists(), done.stderr


def _admitted(ctx: zmq.Context, publisher: Any, endpoint: str, server: bytes, client: Path) -> bool:
    """Whether a new subscriber with ``client``'s keys gets an event within 3 s of sends."""
    sock = subscriber(ctx, endpoint, "", server, zmq.auth.load_certificate(client))
    try:
        for _ in range(30):
            publisher.send({"type": "frame", "source": "cam"})
            if sock.poll(100):
                return True
        return False
    finally:
        sock.close(linger=0)


def _curve_publisher(tmp_path: Path) -> tuple[Any, str, Path]:
    """A publisher with key pair ``a``'s server key admitting ``a``'s client alone (a second pair,
    ``b``, is made beside it): the publisher, its endpoint and its allow-list folder."""
    from fer_pipe.publisher import Publisher

    for name in ("a", "b"):
        assert fer_pipe("keys", str(tmp_path / name)).returncode == 0
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "a.key").write_bytes((tmp_path / "a" / "client.key").read_bytes())
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    return Publisher("zmq", "events", endpoint, curve_secret_key=str(tmp_path / "a" / "server.key_secret"),
                     curve_clients=str(allowed)), endpoint, allowed


def test_curve_clients_is_read_at_each_handshake_and_a_refused_key_is_said(tmp_path, capfd):
    """pyzmq read the folder once, at the start: a key removed from it was admitted for as long
    as the run lasted, a key added refused, and a refused subscriber left only "0 of 1
    subscriptions", as if nobody had come (s51b 2, 3)."""
    publisher, endpoint, allowed = _curve_publisher(tmp_path)
    server = zmq.auth.load_certificate(tmp_path / "a" / "server.key")[0]
    ctx = zmq.Context()
    try:
        a, b = tmp_path / "a" / "client.key_secret", tmp_path / "b" / "client.key_secret"
        assert _admitted(ctx, publisher, endpoint, server, a)
        assert not _admitted(ctx, publisher, endpoint, server, b)
        (allowed / "a.key").unlink()
        (allowed / "b.key").write_bytes((tmp_path / "b" / "client.key").read_bytes())
        assert _admitted(ctx, publisher, endpoint, server, b)
        assert not _admitted(ctx, publisher, endpoint, server, a)
    finally:
        ctx.term()
        publisher.close(0.0)
    said = capfd.readouterr().err.splitlines()
    keys = [zmq.auth.load_certificate(tmp_path / name / "client.key")[0].decode() for name in ("b", "a")]
    assert said == [f"fer-pipe: zmq sink 'events': refused a subscriber whose client key {key} is not in curve_clients "
                    f"{allowed}" for key in keys]


def test_subscribe_says_why_the_publisher_refused_it(tmp_path):
    """A subscriber whose key was not on the list, or without CURVE against a publisher with it,
    waited in silence, as for a quiet run (s51b 3)."""
    publisher, endpoint, _ = _curve_publisher(tmp_path)
    try:
        for keys, why in [(["--server-key", str(tmp_path / "a" / "server.key"), "--client-keys",
                            str(tmp_path / "b" / "client.key_secret")],
                           "the publisher refused this subscriber's key (status 400): the public half of "
                           "--client-keys is not in the sink's curve_clients folder, or the sink cannot read the "
                           "folder"),
                          ([], "the publisher uses CURVE: give --server-key and --client-keys")]:
            said = tmp_path / "said.txt"
            proc = start_fer_pipe("subscribe", endpoint, *keys, stderr_path=said)
            try:
                wait_for(lambda: why in said.read_text(), 60, why, proc)
            finally:
                stop(proc)
            assert f"fer-pipe subscribe: {endpoint}: {why}; retrying\n" in said.read_text()
    finally:
        publisher.close(0.0)


def test_curve_clients_without_a_secret_key_is_refused():
    """An allow-list alone would publish in plain text to anyone, its owner thinking the
    subscribers checked (untested: s38c)."""
    done = fer_pipe("validate", str(REPO / "configs" / "video_to_zmq.yaml"), "--set", "events.curve_clients=/tmp")
    assert done.returncode == 2
    assert done.stderr.endswith("stage 'events' (zmq): params: curve_clients needs curve_secret_key\n"), done.stderr


def subscribe_csv(count: int, messages: list[list[bytes]], *args: str, subscriptions: int = 1,
                  env: dict[str, str] | None = None, stdout: Any = subprocess.PIPE) -> tuple[int, str, str]:
    """``fer-pipe subscribe --format csv --count N`` against a real XPUB socket, which sends
    ``messages`` once the subscriptions are there (from then on nothing sent is lost)."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.bind(endpoint)
    cli = subprocess.Popen([sys.executable, "-m", "fer_pipe.cli", "subscribe", endpoint, "--format", "csv",
                            "--count", str(count), *args], stdout=stdout, stderr=subprocess.PIPE, text=True,
                           env=env)
    try:
        for _ in range(subscriptions):
            assert pub.poll(60_000), "the subscriber never subscribed"
            pub.recv()
        for message in messages:
            pub.send_multipart(message)
        out, err = cli.communicate(timeout=60)
    finally:
        stop(cli)
        pub.close(0)
        ctx.term()
    return cli.returncode, out, err


FRAME_7 = {"schema": 1, "type": "frame", "source": "cam", "frame": 7, "timestamp": 0.28, "faces": []}


def test_a_subscriber_reaches_a_publisher_restarted_after_the_first_went_silent():
    """A publisher whose host died leaves its subscribers' connections open: ``fer-pipe
    subscribe`` waited on it for ever, and never reached the run restarted at that address
    (s40b). It pings, and reconnects once pings go unanswered."""
    from fer_pipe.subscribe import join, subscriber

    target = free_port()
    ctx = zmq.Context()
    try:
        with silencing_relay(target) as (port, silence):
            first = ctx.socket(zmq.PUB)
            first.bind(f"tcp://127.0.0.1:{target}")
            sub = subscriber(ctx, f"tcp://127.0.0.1:{port}", [])
            join(sub, f"tcp://127.0.0.1:{port}")

            def hears(pub: zmq.Socket, word: bytes) -> bool:
                pub.send_multipart([b"emotion.cam", word])
                return bool(sub.poll(100)) and sub.recv_multipart()[1] == word

            wait_for(lambda: hears(first, b"first"), 30, "the first publisher's events")
            silence()
            first.close(linger=0)
            second = bound_again(ctx, zmq.PUB, f"tcp://127.0.0.1:{target}")
            wait_for(lambda: hears(second, b"second"), 60, "the restarted publisher's events")
    finally:
        ctx.destroy(linger=0)


def test_subscribe_csv_appended_to_a_file_writes_its_header_once(tmp_path):
    """``fer-pipe subscribe --format csv >> all.csv`` across restarts put a header among the
    rows, which R read as text columns and sqlite as a row (s48k 1): as the csv sink, it writes
    its header only into an empty file."""
    out = tmp_path / "all.csv"
    for _ in range(2):
        with open(out, "a") as appended:
            code, _, err = subscribe_csv(1, [[b"emotion.cam", json.dumps(FRAME_7).encode()]], stdout=appended)
        assert code == 0, err
    lines = out.read_text().splitlines()
    assert [line.split(",")[:2] for line in lines] == [["source", "frame"], ["cam", "7"], ["cam", "7"]]


def test_subscribe_csv_starts_a_file_emptied_under_it_with_the_header(tmp_path):
    """Its header went out once, at its start: after logrotate's copytruncate of ``>> all.csv``
    the rows went on with none, and every restart kept the file so (s49f 2). It writes through
    the csv sink's writer now, which starts an emptied file with the header."""
    out = tmp_path / "all.csv"
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.bind(endpoint)
    with open(out, "a") as appended:
        cli = subprocess.Popen([sys.executable, "-m", "fer_pipe.cli", "subscribe", endpoint, "--format", "csv",
                                "--count", "2"], stdout=appended, stderr=subprocess.PIPE, text=True)
    try:
        assert pub.poll(60_000), "the subscriber never subscribed"
        pub.recv()
        pub.send_multipart([b"emotion.cam", json.dumps(FRAME_7).encode()])
        wait_for(lambda: out.read_text().count("\n") == 2, 60, "the first row")
        out.write_bytes(b"")  # what copytruncate does after copying
        pub.send_multipart([b"emotion.cam", json.dumps({**FRAME_7, "frame": 8}).encode()])
        _, err = cli.communicate(timeout=60)
    finally:
        stop(cli)
        pub.close(0)
        ctx.term()
    assert cli.returncode == 0, err
    assert [line.split(",")[:2] for line in out.read_text().splitlines()] == [["source", "frame"], ["cam", "8"]]


def test_subscribe_csv_says_once_which_event_types_it_skips():
    """Before, episode and face events were dropped from --format csv without a word: against an
    episodes publisher the user saw a header and nothing else."""
    from fer_pipe.events import encode

    episode = {"schema": 1, "type": "episode", "source": "cam", "track_id": 1, "label": "happy"}
    strangers = [{**episode, "type": f"made_up_{i}"} for i in range(50)] + [{**episode, "type": ["a", "list"]}]
    events = (episode, episode, {**episode, "type": "face_lost"}, *strangers)
    code, out, err = subscribe_csv(1, [encode(event) for event in events[:3]]  # --count counts the rows' events
                                   + [[b"episode.cam", json.dumps(event).encode()] for event in strangers]
                                   + [encode(FRAME_7)])
    assert code == 0
    assert [line.split(",")[:3] for line in out.splitlines()[1:]] == [["cam", "7", "0.280"]]
    assert err.splitlines() == [  # a line for each type a stranger made up was 50,000 lines (s58b 10)
        "fer-pipe subscribe: --format csv writes frame events only; skipping 'episode' events (--format json shows them)",
        "fer-pipe subscribe: --format csv writes frame events only; skipping 'face_lost' events (--format json shows them)",
        "fer-pipe subscribe: --format csv writes frame events only; skipping events of types no fer-pipe sink sends "
        "(first 'made_up_0') (--format json shows them)"]


def test_subscribe_csv_writes_utf8_whatever_the_locale(tmp_path):
    """Under a Latin-1 locale a source id in another script was escaped (\\u6771\\u53e3) in the rows,
    exit 0: data, unlike a message, is written as the csv sink writes it, in UTF-8 (s46f)."""
    from fer_pipe.events import encode

    code, out, err = subscribe_csv(1, [encode({**FRAME_7, "source": "東口"})], env=latin1_locale(tmp_path))
    assert (code, [line.split(",")[:3] for line in out.splitlines()[1:]]) == (0, [["東口", "7", "0.280"]]), err


def test_subscribe_to_one_source_gets_no_events_of_another_whose_id_it_starts():
    """Topics are prefixes: the README's one-source subscription, emotion.cam1, also got cam10's
    events, which a reader that did not check the source took for cam1's faces."""
    from fer_pipe.events import encode

    events = [{**FRAME_7, "source": source, "frame": frame} for frame, source in enumerate(["cam10", "cam1", "cam10",
                                                                                             "cam1"])]
    code, out, err = subscribe_csv(2, [encode(event) for event in events], "--source", "cam1", subscriptions=3)
    assert code == 0, err
    assert [line.split(",")[:2] for line in out.splitlines()[1:]] == [["cam1", "1"], ["cam1", "3"]]


# events a peer may send that the CSV cannot hold: each must be skipped with a line, not end the reader
MALFORMED = [b"not json", json.dumps({"schema": 1, "type": "frame", "source": "cam", "frame": 1, "timestamp": 0.0,
                                      "faces": ["x"], "seq": 0, "run": "r"}).encode(),
             json.dumps({"schema": 1, "type": "frame", "source": "cam", "frame": 2, "timestamp": 0.0,
                         "faces": [{"probs": [0.5, 0.5]}], "seq": 1, "run": "r"}).encode(),
             b'{"schema": 1, "type": "frame", "source": "cam", "frame": 1e400, "timestamp": 0.0, "faces": [], '
             b'"seq": 1e400, "run": "r"}',  # JSON's numbers have no bound: int() of infinity overflows
             b"[" * 100_000,  # nested deeper than the decoder recurses
             b'{"schema": 1, "type": "frame", "source": "cam\\ud800", "frame": 3, "timestamp": 0.0, "faces": [], '
             b'"seq": 2, "run": "r"}',  # a lone surrogate: valid JSON, but no UTF-8 for the CSV
             # none a run sends: rows of "nan", of frame 1 for true, of a face with no box, of 340,000
             # faces from one event of empty objects (s58b 4, 6)
             *(json.dumps({"schema": 1, "type": "frame", "source": "cam", "frame": 1, "timestamp": 0.0, "faces": [],
                           "seq": 1, "run": "r", **change}).encode()
               for change in ({"timestamp": "nan"}, {"frame": True}, {"frame": "12"}, {"frame": "1" * 100_000},
                              {"faces": [{}]},
                              {"faces": [{"x": "=1+1", "y": 0, "w": 9, "h": 9}]},
                              {"faces": [{"x": 0, "y": 0, "w": 9, "h": 9, "label": [[1]]}]},
                              {"faces": [{"x": 0, "y": 0, "w": 9, "h": 9, "probs": {"happy": "=2+2"}}]},
                              {"faces": [{"x": 0, "y": 0, "w": 9, "h": 9}] * 4097}))]


def skipped_events(err: str, program: str) -> int:
    """The malformed events the lines in ``err`` say ``program`` skipped: the first alone, then
    a count at most every 10 s and at the end."""
    said = re.findall(rf"^fer-pipe {program}: skipped (a|\d+) malformed event", err, re.M)
    assert all(len(line) < 1000 for line in err.splitlines()), "a line quotes the whole of what the peer sent"
    return sum(1 if count == "a" else int(count) for count in said)


def test_subscribe_to_a_host_name_that_does_not_resolve_says_so(tmp_path):
    """ZeroMQ retries such a name without a word: a typo in the publisher's name waited in
    silence for ever, as for a run with nothing to send (s37b). .invalid never resolves."""
    err = tmp_path / "err"
    proc = start_fer_pipe("subscribe", "tcp://eventhost.invalid:5571", stderr_path=err)
    try:
        wait_for(lambda: err.read_text(), 60, "a line on stderr", proc)
    finally:
        stop(proc, signal.SIGINT)
    assert err.read_text().splitlines()[0] == ("fer-pipe subscribe: no such host 'eventhost.invalid' (yet?): waiting "
                                               "until it resolves and a publisher there sends")
    assert "nothing listens" not in err.read_text()  # said once, as the name's


def subscribing(endpoint: str, count: int, err: Path) -> subprocess.Popen:
    """``fer-pipe subscribe ENDPOINT --count N``, its events on a pipe, its lines into ``err``."""
    return subprocess.Popen([sys.executable, "-m", "fer_pipe.cli", "subscribe", endpoint, "--count", str(count)],
                            stdout=subprocess.PIPE, stderr=err.open("w"), text=True)


def test_subscribe_to_a_port_where_nothing_listens_says_so_once_then_takes_the_events(tmp_path):
    """The run not started yet, or another port than its sink's: ZeroMQ retries without a word,
    and the subscriber waited in silence as for a run with nothing to send (s62a 6). Said once,
    not at each retry, and the events come once a publisher binds there."""
    endpoint, err = f"tcp://127.0.0.1:{free_port()}", tmp_path / "err"
    proc = subscribing(endpoint, 1, err)
    ctx = zmq.Context()
    try:
        wait_for(lambda: err.read_text(), 60, "a line on stderr", proc)
        time.sleep(0.5)  # ZeroMQ's retries meanwhile, every 100 ms, say nothing more
        pub = ctx.socket(zmq.XPUB)
        pub.bind(endpoint)
        assert pub.poll(60_000), "the subscriber never subscribed"
        pub.send_multipart([b"emotion.cam", json.dumps(FRAME_7).encode()])
        out = proc.communicate(timeout=60)[0]
    finally:
        stop(proc)
        ctx.destroy(linger=0)
    assert err.read_text() == (f"fer-pipe subscribe: {endpoint}: nothing listens there (yet; is the run started, "
                               "and is this its sink's endpoint?); retrying\n")
    assert json.loads(out)["frame"] == FRAME_7["frame"]


def test_subscribe_says_when_its_publisher_closed_the_connection_and_takes_the_next_one(tmp_path):
    """A subscriber too slow for its run is cut off by the publisher's pings and loses what it
    had not taken: ``fer-pipe subscribe`` went on in silence, the gap looking like a quiet
    stretch (s64b 2). Said at each connection that ended after events came, as a run's end is;
    one that ended before any came, once (a publisher that drops it at every reconnection made
    a line every 100 ms), and a run's end is not "nothing listens (yet; is the run started?)"
    (s64d 3, 5)."""
    endpoint, err = f"tcp://127.0.0.1:{free_port()}", tmp_path / "err"
    proc = subscribing(endpoint, 2, err)
    ctx = zmq.Context()
    try:
        for frame in (None, None, 7, 8):
            pub = bound_again(ctx, zmq.XPUB, endpoint)
            assert pub.poll(60_000), "the subscriber never subscribed"
            pub.recv()
            if frame is not None:
                pub.send_multipart([b"emotion.cam", json.dumps({**FRAME_7, "frame": frame}).encode()])
            if frame == 8:
                break
            if frame == 7:
                assert json.loads(proc.stdout.readline())["frame"] == 7
            pub.close(linger=0)
            said = "ended: its run" if frame else "ended before any event came"
            wait_for(lambda: said in err.read_text(), 60, "its line", proc)
            time.sleep(0.5)  # ZeroMQ's reconnections meanwhile, every 100 ms, to nothing
        out = proc.communicate(timeout=60)[0]
    finally:
        stop(proc)
        ctx.destroy(linger=0)
    assert json.loads(out)["frame"] == 8
    assert err.read_text().splitlines() == [
        f"fer-pipe subscribe: {endpoint}: the connection to the publisher ended before any event came; retrying",
        f"fer-pipe subscribe: {endpoint}: the connection to the publisher ended: its run ended or was restarted, its "
        "host went silent, or this subscriber fell too far behind it and lost the events it had not taken; reconnecting"]


def subscribed_again(pub: zmq.Socket) -> None:
    """Wait until an XPUB's subscriber has left (``\\x00``) and subscribed again (``\\x01``)."""
    while (said := pub.recv() if pub.poll(60_000) else None) != b"\x01":
        assert said == b"\x00", "the subscriber never subscribed again"


def test_subscribe_takes_the_events_after_one_too_large_for_it(tmp_path):
    """ZeroMQ drops a connection whose event passes the subscriber's MAXMSGSIZE and, after that
    protocol error, never makes it again: the subscriber said "reconnecting" and waited for ever
    (s64d 4). It now makes a new connection and takes the events that follow."""
    from fer_pipe.events import MAX_EVENT_BYTES

    endpoint, err = f"tcp://127.0.0.1:{free_port()}", tmp_path / "err"
    proc = subscribing(endpoint, 2, err)
    ctx = zmq.Context()
    try:
        pub = ctx.socket(zmq.XPUB)
        pub.bind(endpoint)
        assert pub.poll(60_000) and pub.recv() == b"\x01", "the subscriber never subscribed"
        pub.send_multipart([b"emotion.cam", json.dumps(FRAME_7).encode()])
        assert json.loads(proc.stdout.readline())["frame"] == 7
        pub.send_multipart([b"emotion.cam", json.dumps({**FRAME_7, "frame": 8, "pad": "x" * MAX_EVENT_BYTES}).encode()])
        subscribed_again(pub)
        pub.send_multipart([b"emotion.cam", json.dumps({**FRAME_7, "frame": 9}).encode()])
        out = proc.communicate(timeout=60)[0]
    finally:
        stop(proc)
        ctx.destroy(linger=0)
    assert json.loads(out)["frame"] == 9
    assert err.read_text().splitlines()[1:] == [
        f"fer-pipe subscribe: {endpoint}: ZeroMQ gave the connection up, as it does when the publisher sends an event "
        "over 1 MiB, the most a subscriber takes (that event is lost); connecting again"]


def test_subscribe_connects_again_after_a_handshake_that_failed(tmp_path):
    """ZeroMQ never retries a failed handshake: a subscriber whose run was restarted with CURVE
    on in its sink, where the subscriber had none, said "retrying" and still took nothing once
    the run was started again without it (s64d 4); and it then blamed an event over 1 MiB, as
    the first connection had ended after its handshake (s67e 4)."""
    endpoint, err = f"tcp://127.0.0.1:{free_port()}", tmp_path / "err"
    proc = subscribing(endpoint, 2, err)
    ctx = zmq.Context()
    try:
        pub = ctx.socket(zmq.XPUB)
        pub.bind(endpoint)
        assert pub.poll(60_000), "the subscriber never subscribed"
        pub.send_multipart([b"emotion.cam", json.dumps({**FRAME_7, "frame": 6}).encode()])
        assert json.loads(proc.stdout.readline())["frame"] == 6
        pub.close(linger=0)
        pub = bound_again(ctx, zmq.XPUB, endpoint, curve_server=True, curve_secretkey=zmq.curve_keypair()[1])
        wait_for(lambda: "uses CURVE" in err.read_text(), 60, "the handshake's line", proc)
        pub.close(linger=0)
        pub = bound_again(ctx, zmq.XPUB, endpoint)
        assert pub.poll(60_000), "the subscriber never subscribed"
        pub.send_multipart([b"emotion.cam", json.dumps(FRAME_7).encode()])
        out = proc.communicate(timeout=60)[0]
    finally:
        stop(proc)
        ctx.destroy(linger=0)
    assert json.loads(out)["frame"] == 7
    said = err.read_text().splitlines()  # ZeroMQ says a closed handshake so where the publisher closes first
    assert f"fer-pipe subscribe: {endpoint}: the publisher uses CURVE: give --server-key and --client-keys; retrying" \
        in said
    assert not [line for line in said if "1 MiB" in line], said


def test_subscribe_names_a_publisher_whose_every_event_is_too_large_once(tmp_path):
    """Every event over 1 MiB (a zmq sink with very wide extra fields): the subscriber made a
    new connection each second and said only "ended before any event came" (s67e 5)."""
    from fer_pipe.events import MAX_EVENT_BYTES

    endpoint, err = f"tcp://127.0.0.1:{free_port()}", tmp_path / "err"
    proc = subscribing(endpoint, 1, err)
    ctx = zmq.Context()
    try:
        pub = ctx.socket(zmq.XPUB)
        pub.bind(endpoint)
        for _ in range(3):  # each time it subscribes again, one event too large
            subscribed_again(pub)
            pub.send_multipart([b"emotion.cam", json.dumps({**FRAME_7, "pad": "x" * MAX_EVENT_BYTES}).encode()])
        subscribed_again(pub)
        pub.send_multipart([b"emotion.cam", json.dumps(FRAME_7).encode()])
        out = proc.communicate(timeout=60)[0]
    finally:
        stop(proc)
        ctx.destroy(linger=0)
    assert json.loads(out)["frame"] == 7
    assert err.read_text().splitlines() == [
        f"fer-pipe subscribe: {endpoint}: the connection to the publisher ended before any event came; retrying",
        f"fer-pipe subscribe: {endpoint}: ZeroMQ gave the connection up, as it does when the publisher sends an event "
        "over 1 MiB, the most a subscriber takes (that event is lost); connecting again"]


def test_subscribe_reads_its_keys_once_while_a_publisher_that_refuses_them_is_retried(tmp_path):
    """Each new connection (one a second, to a publisher that refuses the key) read the key
    files again: one readable by others was warned of every second, and one rotated meanwhile
    failed the subscriber with three tracebacks (s67e 1, 2)."""
    publisher, endpoint, _ = _curve_publisher(tmp_path)
    secret, said = tmp_path / "b" / "client.key_secret", tmp_path / "said.txt"
    secret.chmod(0o644)
    try:
        proc = start_fer_pipe("subscribe", endpoint, "--server-key", str(tmp_path / "a" / "server.key"),
                              "--client-keys", str(secret), stderr_path=said)
        try:
            wait_for(lambda: "refused this subscriber's key" in said.read_text(), 60, "the refusal", proc)
            secret.unlink()
            time.sleep(3.5)  # three new connections meanwhile, refused as the first
            assert proc.poll() is None, said.read_text()
        finally:
            stop(proc)
    finally:
        publisher.close(0.0)
    text = said.read_text()
    assert text.count("can be read by others") == 1 and "Traceback" not in text, text


def test_subscribe_takes_events_read_before_their_handshake_was_seen_as_heard(capsys):
    """A monitor event is taken only when no event waits: a busy subscriber read a connection's
    events, then took its handshake, which forgot them, and said "ended before any event came"
    at its end (s64g 5)."""
    from fer_pipe.subscribe import Connection

    ctx = zmq.Context()
    try:
        said = []
        for heard, events in [(True, (zmq.EVENT_CONNECTED, zmq.EVENT_HANDSHAKE_SUCCEEDED, zmq.EVENT_DISCONNECTED)),
                              (False, (zmq.EVENT_CONNECTED, zmq.EVENT_DISCONNECTED))]:  # and a peer that is no publisher
            connection = Connection(lambda: ctx.socket(zmq.SUB), "tcp://127.0.0.1:5556", curve=False, unresolved=False)
            connection.heard = heard  # events read first
            for event in events:
                connection._take({"event": event, "value": 0, "endpoint": b"tcp://127.0.0.1:5556"})
            connection.close()
            said.append(capsys.readouterr().err)
    finally:
        ctx.destroy(linger=0)
    assert "the connection to the publisher ended: its run ended" in said[0]
    assert "something listens there but closed the connection" in said[1]


def test_subscribe_refuses_a_topic_no_publisher_takes():
    """A publisher drops a subscriber whose subscription passes 4 KiB, at every reconnection:
    the subscriber waited for ever, or said so every 100 ms (s64d 3)."""
    done = fer_pipe("subscribe", "tcp://127.0.0.1:5556", "--topic", "emotion." + "x" * 5000)
    assert (done.returncode, done.stderr) == (2, "fer-pipe: --topic emotion.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...: a "
                                                 "topic of 5008 bytes; a publisher takes 4095 at most\n")


@pytest.mark.parametrize("peer", ["collector", "http"])
def test_subscribe_given_a_port_where_no_publisher_listens_does_not_say_nothing_listens(tmp_path, peer):
    """A collector's --bind (one port beside its --publish) or a web server there closes each
    connection: ZeroMQ retries it, and the retry was said as "nothing listens there" (s64b 3)."""
    port = free_port()
    ctx = zmq.Context()
    server = None
    if peer == "collector":
        pull = ctx.socket(zmq.PULL)
        pull.bind(f"tcp://127.0.0.1:{port}")
        why = ("something listens there but closed the connection (a publisher is a zmq sink's endpoint, an "
               "episodes sink's publish port, or collect --publish); retrying",
               "the handshake with the publisher failed (")  # either, as ZeroMQ sees the close
    else:
        server = socket.create_server(("127.0.0.1", port))

        def answer() -> None:
            with contextlib.suppress(OSError):
                while True:
                    conn = server.accept()[0]
                    conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
                    conn.close()

        threading.Thread(target=answer, daemon=True).start()
        why = ("the handshake with the publisher failed (",)
    err = tmp_path / "err"
    proc = start_fer_pipe("subscribe", f"tcp://127.0.0.1:{port}", stderr_path=err)
    try:
        wait_for(lambda: any(said in err.read_text() for said in why), 60, "its line", proc)
        time.sleep(0.5)  # ZeroMQ's reconnections meanwhile, every 100 ms
    finally:
        stop(proc, signal.SIGINT)
        if server is not None:
            server.close()
        ctx.destroy(linger=0)
    assert all(any(said in line for said in why) for line in err.read_text().splitlines()), err.read_text()


def test_subscribe_skips_a_malformed_event_with_a_line_and_goes_on():
    from fer_pipe.events import encode

    code, out, err = subscribe_csv(1, [[b"emotion.cam", body] for body in MALFORMED] + [encode(FRAME_7)])
    assert code == 0, err
    assert [line.split(",")[:3] for line in out.splitlines()[1:]] == [["cam", "7", "0.280"]]
    # one line at once, then a count at most every 10 s: 300 events of a 1 MB field made 300 lines of a
    # million characters in 4 s (s66b 3)
    assert len(err.splitlines()) == 2 and skipped_events(err, "subscribe") == len(MALFORMED), err


def test_subscribers_and_collectors_import_without_opencv():
    """The emotion list lived with the pixel code, so reading events needed OpenCV: a
    subscriber on another machine had to install it to print labels."""
    code = ("import sys; sys.modules['cv2'] = None\n"  # any import of cv2 now raises ImportError
            "import fer_pipe.subscribe, fer_pipe.collect, fer_pipe.events\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_a_subscriber_flooding_subscriptions_cannot_hold_up_the_sink(monkeypatch):
    """Each send read away every subscription message waiting: a subscriber that subscribed and
    unsubscribed in a loop held the pipeline (a 72-frame run took 28 s in place of 2, and failed
    as stalled under --stall-timeout, s44a). A send reads for a few milliseconds, here none: one
    batch of 64, so a thousand messages are more than one send reads, and twenty read five hundred
    (where none was read, ZeroMQ kept a flood's, 30 MiB a second, s44e). With the milliseconds,
    a million were checked against one send, and how many had arrived by then decided it (CI 45d)."""
    import fer_pipe.publisher
    from fer_pipe.publisher import Publisher

    monkeypatch.setattr(fer_pipe.publisher, "SUBSCRIPTIONS_READ_S", 0.0)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    publisher = Publisher("zmq", "events", endpoint)
    ctx = zmq.Context()
    flood = ctx.socket(zmq.SUB)
    flood.setsockopt(zmq.SNDHWM, 0)
    flood.connect(endpoint)
    try:
        socket = publisher._sock
        for count, sends, left in ((500, 20, False), (1000, 1, True)):
            for _ in range(count // 2):
                flood.setsockopt(zmq.SUBSCRIBE, b"zz")
                flood.setsockopt(zmq.UNSUBSCRIBE, b"zz")
            wait_for(lambda: socket.poll(0, zmq.POLLIN), 30, "the subscriptions to arrive")
            time.sleep(1.0)  # all of them
            for _ in range(sends):
                publisher.send({"type": "frame", "source": "cam"})
            assert bool(socket.poll(0, zmq.POLLIN)) == left, count
    finally:
        flood.close(linger=0)
        ctx.term()
        publisher.close(0.0)


def test_malformed_lines_say_the_first_at_once_and_then_count_the_rest():
    from fer_pipe.malformed_lines import MalformedLines

    lines: list[str] = []
    notices = MalformedLines(lines.append, every_s=60)
    for value in ("a", "b" * 1000, "c"):
        notices.skipped(ValueError(value))
    notices.flush()
    assert lines == ["skipped a malformed event: ValueError: a"]
    notices.flush(final=True)
    assert lines[1:] == ["skipped 2 malformed event(s) since the last such line, the last: ValueError: c"]
    each = MalformedLines(lines.append, every_s=0)
    each.skipped(ValueError("b" * 1000))
    each.skipped(KeyError("d"))
    assert lines[2:] == [f"skipped a malformed event: ValueError: {'b' * 188}... (1012 characters)",
                         "skipped 1 malformed event(s) since the last such line, the last: KeyError: 'd'"]


@pytest.mark.parametrize("stops", [[signal.SIGTERM], [signal.SIGHUP], [signal.SIGTERM, signal.SIGHUP]])
def test_subscribe_ended_by_a_signal_says_the_malformed_events_it_had_not_yet_counted(tmp_path, stops):
    """Said at most every 10 s, the count of those after the first was lost with a subscriber that
    SIGTERM ended (s66d 5); it still ends as any program does on the signal. SIGTERM and SIGHUP
    together (systemd's SendSIGHUP) left it waiting for an event in one of two runs (s66e 2)."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.bind(endpoint)
    err = tmp_path / "err"
    # SIGHUP as a terminal's session gives it: a suite run under nohup left it ignored, which the
    # subscriber keeps so
    proc = subprocess.Popen([sys.executable, "-m", "fer_pipe.cli", "subscribe", endpoint], stdout=subprocess.DEVNULL,
                            stderr=open(err, "w"), preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    try:
        assert pub.poll(60_000), "the subscriber never subscribed"
        pub.recv()
        for _ in range(3):
            pub.send_multipart([b"emotion.cam", b"not json"])
        wait_for(lambda: "skipped a malformed event" in err.read_text(), 60, "the first line", proc)
        time.sleep(0.5)  # the other two taken
        for sent in stops:
            proc.send_signal(sent)
        assert proc.wait(30) in [-sent for sent in stops]
    finally:
        if proc.poll() is None:
            proc.kill()
        pub.close(0)
        ctx.term()
    assert err.read_text().splitlines()[1:] == [
        "fer-pipe subscribe: skipped 2 malformed event(s) since the last such line, the last: JSONDecodeError: "
        "Expecting value: line 1 column 1 (char 0)"], err.read_text()
