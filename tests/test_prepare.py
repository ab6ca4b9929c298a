from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import pyarrow.parquet as pq
import pytest
from media import astronaut, coffee, copy, truncate, write_video, zero_payload
from services import children, exited, wait_until

from fakefinder import CollectionOptions, Compute, PrepareSettings, UsageError, prepare
from fakefinder.data.manifest import STATE_DIR, crops_folder

MANIFEST_COLUMNS = ["dataset", "video_id", "source_path", "label", "group", "frame_index", "timestamp",
                    "face_index", "x", "y", "w", "h", "score", "crop_path"]
VIDEO_COLUMNS = ["dataset", "video_id", "source_path", "label", "group", "status", "reason", "frames_sampled",
                 "faces_kept", "seconds"]


def tables(out: Path) -> tuple[list[dict], list[dict]]:
    """Both tables as rows, without the per-video timing (the only thing that may differ between runs)."""
    manifest = pq.read_table(out / "manifest.parquet").to_pylist()
    videos = [{k: v for k, v in row.items() if k != "seconds"}
              for row in pq.read_table(out / "videos.parquet").to_pylist()]
    return manifest, videos


def cli(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fakefinder", *map(str, args)], capture_output=True, text=True,
                          check=check)


# ------------------------------------------------------------------------------------------------ layouts

def test_dfdc_layout_manifest_contract(prepared, metadata, collection):
    manifest = pq.read_table(prepared.manifest_path)
    assert manifest.column_names[:len(MANIFEST_COLUMNS)] == MANIFEST_COLUMNS
    videos = pq.read_table(prepared.videos_path)
    assert videos.column_names[:len(VIDEO_COLUMNS)] == VIDEO_COLUMNS
    assert (prepared.videos, prepared.ok, prepared.errors, prepared.layout) == (10, 10, 0, "dfdc")
    rows = manifest.to_pylist()
    assert len(rows) == prepared.faces == 30  # 3 s at 1 fps, the largest face of each frame
    for row in rows:
        info = metadata[row["source_path"]]
        assert row["dataset"] == "syn" and row["video_id"] == row["source_path"][:-4]
        assert row["label"] == (1 if info["label"] == "FAKE" else 0)
        assert row["group"] == (info["original"] or row["source_path"])[:-4]
        crop = cv2.imread(str(prepared.out / row["crop_path"]))
        assert crop.shape == (224, 224, 3)
        assert row["crop_path"] == f"{crops_folder(row['video_id'])}/{row['frame_index']}_{row['face_index']}.png"
        assert min(abs(row["timestamp"] - t) for t in (0.0, 1.0, 2.0)) <= 0.1  # the default tolerance
        assert row["w"] > 50 and row["score"] > 0.5
    info = json.loads((prepared.out / "prepare.json").read_text())
    assert info["settings"]["detector"] == "blazeface" and info["counts"]["faces"] == 30
    assert {"av", "numpy", "pyarrow", "python"} <= set(info["versions"])


def test_boxes_are_in_source_pixels(collection, tmp_path):
    """Frames shrunk to a 320 px working size still report boxes in the video's own pixels."""
    small = prepare(collection.out, tmp_path / "small", settings=PrepareSettings(max_side=320),
                    compute=Compute(processes=1))
    ref = prepare(collection.out, tmp_path / "full", compute=Compute(processes=1))
    by_key = {(r["video_id"], r["frame_index"]): r for r in pq.read_table(ref.manifest_path).to_pylist()}
    for row in pq.read_table(small.manifest_path).to_pylist():
        other = by_key[(row["video_id"], row["frame_index"])]
        assert abs(row["x"] + row["w"] / 2 - other["x"] - other["w"] / 2) < 0.1 * other["w"]
        assert abs(row["w"] - other["w"]) < 0.2 * other["w"]


def test_dfdc_parts_are_found_recursively(collection, metadata, tmp_path):
    src = tmp_path / "dfdc"
    fakes = [n for n, m in metadata.items() if m["label"] == "FAKE"][:2]
    for part, fake in enumerate(fakes):
        original = metadata[fake]["original"]
        folder = src / f"dfdc_train_part_{part}"
        for name in (fake, original):
            copy(collection.out / name, folder / name)
        (folder / "metadata.json").write_text(json.dumps({k: metadata[k] for k in (fake, original)}))
    result = prepare(src, tmp_path / "out", compute=Compute(processes=1))
    _, videos = tables(result.out)
    assert result.layout == "dfdc" and result.ok == 4
    for row in videos:
        part = row["source_path"].split("/")[0]
        assert row["video_id"].startswith(part + "/")
        if row["label"] == 1:
            assert row["group"] == f"{part}/{metadata[row['source_path'].split('/')[1]]['original'][:-4]}"


def test_csv_labels_accept_every_spelling(collection, metadata, tmp_path):
    names = sorted(metadata)[:4]
    spellings = {"REAL": ["REAL", "real", "0"], "FAKE": ["FAKE", "fake", "1"]}
    lines = ["filename,label,original"]
    for i, name in enumerate(names):
        m = metadata[name]
        lines.append(f"{name},{spellings[m['label']][i % 3]},{m['original'] or ''}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    result = prepare(collection.out, tmp_path / "out",
                     collection=CollectionOptions(labels=tmp_path / "labels.csv", dataset="mine"),
                     compute=Compute(processes=1))
    _, videos = tables(result.out)
    assert result.layout == "csv" and [r["source_path"] for r in videos] == names
    for row in videos:
        m = metadata[row["source_path"]]
        assert row["dataset"] == "mine" and row["label"] == (m["label"] == "FAKE")
        assert row["group"] == (m["original"] or row["source_path"])[:-4]


def test_class_folders_with_videos_and_images(collection, metadata, tmp_path):
    src = tmp_path / "folders"
    real = next(n for n, m in metadata.items() if m["label"] == "REAL")
    fake = next(n for n, m in metadata.items() if m["label"] == "FAKE")
    copy(collection.out / real, src / "real" / "clips" / real)
    copy(collection.out / fake, src / "fake" / fake)
    (src / "real" / "portrait.jpg").write_bytes(cv2.imencode(".jpg", astronaut())[1].tobytes())
    (src / "real" / "notes.txt").write_text("not an input")
    result = prepare(src, tmp_path / "out", compute=Compute(processes=1))
    manifest, videos = tables(result.out)
    assert result.layout == "folders" and result.ok == 3
    assert {(r["source_path"], r["label"]) for r in videos} == {
        (f"real/clips/{real}", 0), (f"fake/{fake}", 1), ("real/portrait.jpg", 0)}
    image_rows = [r for r in manifest if r["source_path"] == "real/portrait.jpg"]
    assert [(r["frame_index"], r["timestamp"]) for r in image_rows] == [(0, 0.0)]


# ------------------------------------------------------------------------------------------------ bad input

@pytest.fixture
def messy(collection, metadata, tmp_path):
    """A CSV-labelled collection holding one good video and every kind of bad input."""
    src = tmp_path / "messy"
    src.mkdir()
    good = next(n for n, m in metadata.items() if m["label"] == "REAL")
    copy(collection.out / good, src / "good.mp4")
    copy(collection.out / good, src / "sub" / "maybe.mp4")
    truncate(collection.out / good, src / "truncated.mp4")
    (src / "empty.mp4").write_bytes(b"")
    (src / "text.mp4").write_text("hello\n" * 100)
    write_video(src / "noface.mp4", coffee(), seconds=2)
    cv2.imwrite(str(src / "coffee.png"), coffee())
    zero_payload(collection.out / good, src / "noframes.mp4")
    outside = tmp_path / "outside.mp4"
    copy(collection.out / good, outside)
    os.symlink(outside, src / "link.mp4")
    rows = [("good.mp4", "REAL"), ("truncated.mp4", "FAKE"), ("empty.mp4", "FAKE"), ("text.mp4", "FAKE"),
            ("noface.mp4", "REAL"), ("coffee.png", "REAL"), ("noframes.mp4", "FAKE"), ("sub/maybe.mp4", "maybe"),
            (str(outside), "FAKE"), ("../outside.mp4", "FAKE"), ("link.mp4", "FAKE"), ("missing.mp4", "REAL")]
    (src / "labels.csv").write_text("filename,label\n" + "".join(f"{f},{label}\n" for f, label in rows))
    return src


EXPECTED = {
    "good.mp4": ("ok", ""),
    "truncated.mp4": ("error", "cannot open as video"),
    "empty.mp4": ("error", "cannot open as video"),
    "text.mp4": ("error", "cannot open as video"),
    "noface.mp4": ("no_face", "no face found in 2 sampled frames"),
    "coffee.png": ("no_face", "no face found in 1 sampled frames"),
    "noframes.mp4": ("error", "cannot decode: Invalid data"),
    "sub/maybe.mp4": ("error", "unknown label 'maybe'"),
    "../outside.mp4": ("error", "not a file inside SRC"),
    "link.mp4": ("ok", ""),  # a link inside SRC is read wherever it points
    "missing.mp4": ("error", "file not found"),
}


def test_every_bad_input_becomes_a_row_and_the_batch_goes_on(messy, tmp_path):
    out = tmp_path / "out"
    proc = cli("prepare", messy, out, "--labels", messy / "labels.csv", "--processes", "2", "--quiet")
    assert proc.returncode == 0, proc.stderr
    _, videos = tables(out)
    by_path = {r["source_path"]: r for r in videos}
    absolute = [p for p in by_path if p.startswith("/")]
    assert len(absolute) == 1 and by_path[absolute[0]]["reason"].startswith("absolute path not allowed")
    for path, (status, reason) in EXPECTED.items():
        row = by_path[path]
        assert row["status"] == status and row["reason"].startswith(reason), row
        assert "\n" not in row["reason"]
        if status != "ok":
            assert f"{path}: {row['reason']}" in proc.stdout  # the summary names each failure
    assert "ok 2, no face 2, errors 8" in proc.stdout
    assert not list(out.glob("faces/*.partial*"))
    strict = cli("prepare", messy, out, "--labels", messy / "labels.csv", "--strict", "--quiet")
    assert strict.returncode == 1 and "4 reused" in strict.stdout  # inputs that failed are tried again


def test_a_file_name_that_is_not_utf8_is_an_error_row_and_the_batch_is_kept(collection, metadata, tmp_path):
    """Linux names are bytes: b"bad\\xff.mp4" cannot be written to a table as text; it was the whole run's end."""
    src = tmp_path / "bytes"
    (src / "real").mkdir(parents=True)
    (src / "fake").mkdir()
    real = next(n for n, m in metadata.items() if m["label"] == "REAL")
    fake = next(n for n, m in metadata.items() if m["label"] == "FAKE")
    copy(collection.out / real, src / "real" / real)
    copy(collection.out / fake, src / "fake" / fake)
    shutil.copyfile(collection.out / real, os.fsencode(src / "real") + b"/bad\xff.mp4")
    for attempt in range(2):  # and the same again on a rerun, the good videos reused
        proc = cli("prepare", src, tmp_path / "out", "--processes", "1", "--quiet")
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        _, videos = tables(tmp_path / "out")
        by_path = {r["source_path"]: r for r in videos}
        assert by_path["real/bad\\xff.mp4"]["status"] == "error"
        assert by_path["real/bad\\xff.mp4"]["reason"] == "file name is not valid UTF-8 (rename the file)"
        assert [by_path[f"real/{real}"]["status"], by_path[f"fake/{fake}"]["status"]] == ["ok", "ok"]
        assert "real/bad\\xff.mp4: file name is not valid UTF-8" in proc.stdout
    assert "2 reused" in proc.stdout


def test_a_collection_of_symbolic_links_is_read_through_them(collection, metadata, tmp_path):
    """real/ and fake/ holding links into a larger tree (files and a folder): every input is read."""
    src = tmp_path / "linked"
    (src / "real").mkdir(parents=True)
    (src / "fake").mkdir()
    reals = [n for n, m in metadata.items() if m["label"] == "REAL"][:2]
    fakes = [n for n, m in metadata.items() if m["label"] == "FAKE"][:2]
    for name in reals:
        os.symlink(collection.out / name, src / "real" / name)
    (tmp_path / "tree" / "fakes").mkdir(parents=True)
    for name in fakes:
        os.symlink(collection.out / name, tmp_path / "tree" / "fakes" / name)
    os.symlink(tmp_path / "tree" / "fakes", src / "fake" / "batch1")  # a linked folder
    result = prepare(src, tmp_path / "out", settings=PrepareSettings(frames=1), compute=Compute(processes=1))
    assert (result.ok, result.errors) == (4, 0), result.summary()
    assert not any(p.is_symlink() for p in (tmp_path / "out").rglob("*"))


def test_output_folders_never_nest_never_collide_and_stay_inside_out(collection, metadata, tmp_path):
    """`clip.mp4` and `clip/x.mp4` are two inputs: processing one must not delete the other's crops; a 252-byte
    name works; no name puts anything outside OUT."""
    src = tmp_path / "src"
    real = next(n for n, m in metadata.items() if m["label"] == "REAL")
    fake = next(n for n, m in metadata.items() if m["label"] == "FAKE")
    copy(collection.out / real, src / "real" / "clip.mp4")
    copy(collection.out / real, src / "real" / "clip" / "x.mp4")
    long_name = "a" * 248 + ".mp4"  # 252 bytes: legal on every common file system
    copy(collection.out / fake, src / "fake" / long_name)
    out = tmp_path / "out"
    result = prepare(src, out, settings=PrepareSettings(frames=2), compute=Compute(processes=1))
    assert (result.ok, result.errors) == (3, 0), result.summary()
    manifest, videos = tables(out)
    assert {v["video_id"] for v in videos} == {"real/clip", "real/clip/x", "fake/" + "a" * 248}
    for row in manifest:
        assert (out / row["crop_path"]).is_file() and row["crop_path"].count("/") == 2  # faces/<folder>/<crop>
    again = prepare(src, out, settings=PrepareSettings(frames=2), compute=Compute(processes=1))
    assert again.reused == 3 and tables(out) == (manifest, videos)
    inside = out.resolve()
    assert all(p.resolve().is_relative_to(inside) for p in out.rglob("*"))


def test_hostile_label_files_become_rows_not_tracebacks(collection, metadata, tmp_path):
    src = tmp_path / "hostile"
    good = next(n for n, m in metadata.items() if m["label"] == "REAL")
    copy(collection.out / good, src / "good.mp4")
    copy(collection.out / good, src / "sub" / "a.mp4")
    copy(collection.out / good, src / "twice.mp4")
    rows = ["good.mp4,REAL", "sub/..,FAKE", ".,FAKE", ",REAL", "twice.mp4,REAL", "twice.mp4,FAKE", "good.mp4,REAL"]
    (src / "labels.csv").write_text("filename,label\n" + "\n".join(rows) + "\n")
    proc = cli("prepare", src, tmp_path / "out", "--labels", src / "labels.csv", "--frames", "1", "--quiet")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    _, videos = tables(tmp_path / "out")
    reasons = {v["source_path"]: (v["status"], v["reason"]) for v in videos}
    assert reasons["good.mp4"] == ("ok", "")  # listed twice with the same label: harmless
    assert reasons["."][1].startswith("not a file inside SRC")  # "sub/.." and "." both name SRC itself
    assert reasons[""][1] == "empty file name"
    assert reasons["twice.mp4"][0] == "error" and "listed twice with different labels" in reasons["twice.mp4"][1]
    assert "labels.csv row 6" in reasons["twice.mp4"][1] and "labels.csv row 7" in reasons["twice.mp4"][1]
    # DFDC metadata: an empty key, a number as the original, a NUL in a name
    dfdc = tmp_path / "dfdc"
    copy(collection.out / good, dfdc / "good.mp4")
    (dfdc / "metadata.json").write_text(json.dumps({
        "good.mp4": {"label": "REAL"}, "": {"label": "FAKE"}, "nul\u0000.mp4": {"label": "FAKE"},
        "odd.mp4": {"label": "FAKE", "original": 5}}))
    proc = cli("prepare", dfdc, tmp_path / "out2", "--frames", "1", "--quiet")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    _, videos = tables(tmp_path / "out2")
    status = {v["source_path"]: (v["status"], v["reason"]) for v in videos}
    assert status["good.mp4"][0] == "ok" and status[""][1] == "empty file name"
    assert status["odd.mp4"] == ("error", "file not found") and status["nul\\0.mp4"][1] == "name contains a NUL byte"


def test_a_rerun_retries_failed_inputs_and_redoes_deleted_crops(collection, metadata, tmp_path):
    src = tmp_path / "src"
    names = sorted(metadata)[:3]
    for name in names[:2]:
        copy(collection.out / name, src / name)
    (src / "metadata.json").write_text(json.dumps({n: metadata[n] for n in names}))
    out = tmp_path / "out"
    first = prepare(src, out, settings=PrepareSettings(frames=2), compute=Compute(processes=1))
    assert (first.ok, first.errors) == (2, 1)
    copy(collection.out / names[2], src / names[2])  # the missing input arrives (a transient failure)
    manifest, _ = tables(out)
    (out / manifest[0]["crop_path"]).unlink()  # a crop deleted by hand
    again = prepare(src, out, settings=PrepareSettings(frames=2), compute=Compute(processes=1))
    assert (again.ok, again.errors, again.reused) == (3, 0, 1)
    manifest, _ = tables(out)
    assert all((out / r["crop_path"]).is_file() for r in manifest)


@pytest.mark.slow
def test_sigterm_stops_prepare_and_its_workers_and_a_rerun_completes(collection, prepared, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "fakefinder", "prepare", str(collection.out), str(out),
                             "--processes", "2", "--fps", "10", "--quiet"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    records = out / STATE_DIR / "records"
    workers = wait_until(lambda: proc.poll() is None and len(found := children(proc.pid)) >= 2 and found,
                         "two workers")
    wait_until(lambda: list(records.glob("*.json")), "a first record")  # workers busy
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    written = sorted(records.glob("*.json"))
    wait_until(lambda: all(exited(w) for w in workers), "the workers' end")  # workers that outlive prepare fail here
    assert sorted(records.glob("*.json")) == written, "workers went on working after prepare stopped"
    assert not (out / "manifest.parquet").exists()
    assert prepare(collection.out, out, compute=Compute(processes=1)).ok == 10


@pytest.mark.parametrize("case", ["missing_src", "no_labels", "out_is_file", "bad_csv", "bad_fps",
                                  "not_utf8_csv", "unwritable_out"])
def test_unusable_arguments_exit_2_with_one_line(case, tmp_path, collection):
    src, out, extra = collection.out, tmp_path / "out", []
    if case == "missing_src":
        src = tmp_path / "nowhere"
    elif case == "no_labels":
        src = tmp_path / "empty"
        src.mkdir()
    elif case == "out_is_file":
        out.write_text("x")
    elif case == "bad_csv":
        (tmp_path / "l.csv").write_text("name,kind\na.mp4,REAL\n")
        extra = ["--labels", tmp_path / "l.csv"]
    elif case == "not_utf8_csv":
        (tmp_path / "l.csv").write_bytes("filename,label\ncaf\xe9.mp4,REAL\n".encode("latin-1"))
        extra = ["--labels", tmp_path / "l.csv"]
    elif case == "unwritable_out":
        out = Path("/proc/self/fakefinder-out")  # nobody, not even root, can create a folder there
    else:
        extra = ["--fps", "0"]
    proc = cli("prepare", src, out, *extra)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fakefinder prepare: error:") and "Traceback" not in proc.stderr
    expected = {"missing_src": "not a folder", "no_labels": "no labels found", "out_is_file": "is not a folder",
                "bad_csv": "needs columns filename,label", "bad_fps": "--fps must be in (0, 1000]",
                "not_utf8_csv": "not UTF-8 text", "unwritable_out": "cannot write there"}[case]
    assert expected in lines[0]
    with pytest.raises(UsageError):
        prepare(src, out, settings=PrepareSettings() if case != "bad_fps" else PrepareSettings.preset("default", fps=0),
                collection=CollectionOptions(labels=extra[1] if case in ("bad_csv", "not_utf8_csv") else None))


# ------------------------------------------------------------------------------------------------ resume

def test_rerun_reuses_everything_and_gives_the_same_tables(collection, prepared):
    again = prepare(collection.out, prepared.out, compute=Compute(processes=1))
    assert again.reused == 10 and tables(again.out) == tables(prepared.out)


def test_changed_settings_redo_the_work(collection, tmp_path):
    out = tmp_path / "out"
    first = prepare(collection.out, out, settings=PrepareSettings(frames=1), compute=Compute(processes=1))
    second = prepare(collection.out, out, settings=PrepareSettings(frames=1, size=64, margin=0.0),
                     compute=Compute(processes=1))
    assert first.reused == 0 and second.reused == 0
    manifest, _ = tables(out)
    assert len(manifest) == 10
    assert all(cv2.imread(str(out / r["crop_path"])).shape == (64, 64, 3) for r in manifest)


def test_only_a_changed_tolerance_redoes_the_work_and_older_preparations_sampled_exactly(collection, tmp_path):
    import dataclasses
    import hashlib

    from fakefinder.data.dataset import load_dataset
    from fakefinder.data.manifest import PREPARE_INFO
    from fakefinder.data.preparation import RECORD_FORMAT, settings_digest

    exact = PrepareSettings(tolerance=0)
    before = {k: v for k, v in dataclasses.asdict(exact).items()  # records from before it (and align, landmarks)
              if k not in ("tolerance", "align", "landmarks")}
    assert settings_digest(exact) == hashlib.sha256(json.dumps([RECORD_FORMAT, before], sort_keys=True)
                                                    .encode()).hexdigest()[:16]
    out = tmp_path / "out"
    assert prepare(collection.out, out, settings=exact, compute=Compute(processes=1)).reused == 0
    assert prepare(collection.out, out, settings=exact, compute=Compute(processes=1)).reused == 10
    assert prepare(collection.out, out, settings=PrepareSettings(tolerance=0.2),
                   compute=Compute(processes=1)).reused == 0
    assert load_dataset(out).settings.tolerance == 0.2
    info = json.loads((out / PREPARE_INFO).read_text())
    del info["settings"]["tolerance"]
    (out / PREPARE_INFO).write_text(json.dumps(info))
    assert load_dataset(out).settings.tolerance == 0


def test_a_changed_input_file_is_redone(collection, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(collection.out, src)
    prepare(src, tmp_path / "out", settings=PrepareSettings(frames=1), compute=Compute(processes=1))
    victim = sorted(src.glob("*.mp4"))[0]
    victim.write_bytes(b"replaced by garbage")
    again = prepare(src, tmp_path / "out", settings=PrepareSettings(frames=1), compute=Compute(processes=1))
    assert again.reused == 9 and again.errors == 1


@pytest.mark.slow
@pytest.mark.parametrize("kill_after_records", [0, 3, 7])
def test_sigkill_at_any_moment_then_rerun_gives_the_uninterrupted_result(collection, prepared, tmp_path,
                                                                         kill_after_records):
    out = tmp_path / "out"
    records = out / STATE_DIR / "records"
    proc = subprocess.Popen([sys.executable, "-m", "fakefinder", "prepare", str(collection.out), str(out),
                             "--processes", "1", "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lock = out / STATE_DIR / "lock"
    if kill_after_records == 0:  # inside start-up or the first video: the lock is taken, the work begins
        wait_until(lambda: proc.poll() is not None or lock.is_file() and lock.read_text().startswith("pid "),
                   "prepare holding its lock")
    else:
        wait_until(lambda: proc.poll() is not None or len(list(records.glob("*.json"))) >= kill_after_records,
                   f"{kill_after_records} records")
    assert proc.poll() is None, "finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.parquet").exists()
    result = prepare(collection.out, out, compute=Compute(processes=1))
    assert result.reused >= kill_after_records
    assert tables(out) == tables(prepared.out)
    pngs = sorted(p.relative_to(out).as_posix() for p in out.glob("faces/**/*.png"))
    assert pngs == sorted(r["crop_path"] for r in tables(out)[0])
    assert not list(out.glob("faces/*.partial*"))
    assert sorted(p.suffix for p in records.iterdir()) == [".json"] * 10  # no temporaries a kill left mid-write


@pytest.mark.slow
def test_a_second_prepare_into_the_same_folder_is_refused_while_the_first_runs(collection, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "fakefinder", "prepare", str(collection.out), str(out),
                             "--processes", "1", "--fps", "30", "--quiet"],  # every frame: slow enough to overlap
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: list((out / STATE_DIR / "records").glob("*.json")), "a first record")
        second = cli("prepare", str(collection.out), str(out), "--processes", "1", "--quiet")
        assert second.returncode == 2, second.stderr
        assert proc.poll() is None, "the first run finished before the second started"
        assert "another prepare is writing this folder" in second.stderr and str(out) in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
    finally:
        proc.kill()
        proc.wait()
    assert not (out / "manifest.parquet").exists()
    half_written = out / STATE_DIR / "records" / ".0123abcd.json.k3x9.tmp"  # as a kill inside a record write leaves
    half_written.write_text('{"format": 3, "sett')
    assert prepare(collection.out, out, compute=Compute(processes=1)).ok == 10  # the lock died with its holder
    assert not half_written.exists()


@pytest.mark.slow
def test_two_workers_give_the_same_manifest_as_one(collection, prepared, tmp_path):
    result = prepare(collection.out, tmp_path / "out", compute=Compute(processes=2))
    assert tables(result.out) == tables(prepared.out)


# ------------------------------------------------------------------------------------------------ options

@pytest.mark.slow
def test_reference_preset_and_overrides(collection, tmp_path):
    out = tmp_path / "ref"
    proc = cli("prepare", collection.out, out, "--preset", "reference", "--frames", "1", "--processes", "1", "--quiet")
    assert proc.returncode == 0, proc.stderr
    settings = json.loads((out / "prepare.json").read_text())["settings"]
    assert settings == {"fps": 1.0, "frames": 1, "max_side": 1000, "tolerance": 0.0, "detector": "haar",
                        "margin": 0.0, "faces": "all", "min_face": 0, "size": 224, "align": False,
                        "landmarks": True}
    manifest, videos = tables(out)
    assert all(r["status"] == "ok" for r in videos)
    assert {r["face_index"] for r in manifest} >= {0}


def test_min_face_and_whole_frame_detector(collection, tmp_path):
    big = prepare(collection.out, tmp_path / "a", settings=PrepareSettings(frames=1, min_face=2000),
                  compute=Compute(processes=1))
    assert big.no_face == 10 and big.faces == 0
    settings = PrepareSettings(frames=1, detector="none")
    assert settings.margin == 0  # an image that is a face crop is not padded with black
    whole = prepare(collection.out, tmp_path / "b", settings=settings, compute=Compute(processes=1))
    manifest, _ = tables(whole.out)
    video = {v.name: v for v in collection.videos}
    for row in manifest:
        assert (row["x"], row["y"]) == (0, 0) and row["w"] == pytest.approx(max(video[row["video_id"]].size), abs=1)


def test_faceforensics_layout_records_method_and_groups(collection, metadata, tmp_path):
    src = tmp_path / "ffpp"
    reals = sorted(n for n, m in metadata.items() if m["label"] == "REAL")[:2]
    copy(collection.out / reals[0], src / "original_sequences/youtube/c23/videos/000.mp4")
    copy(collection.out / reals[1], src / "original_sequences/youtube/c23/videos/001.mp4")
    copy(collection.out / reals[0], src / "manipulated_sequences/Deepfakes/c23/videos/000_001.mp4")
    copy(collection.out / reals[1], src / "manipulated_sequences/Face2Face/c23/videos/001_000.mp4")
    copy(collection.out / reals[1], src / "manipulated_sequences/NeuralTextures/c23/videos/002_005.mp4")
    result = prepare(src, tmp_path / "out", settings=PrepareSettings(frames=1), compute=Compute(processes=1))
    _, videos = tables(result.out)
    assert result.layout == "ffpp"
    rows = {r["source_path"].split("/")[1] + "/" + r["source_path"].rsplit("/", 1)[1]: r for r in videos}
    assert rows["youtube/000.mp4"]["label"] == 0 and rows["youtube/000.mp4"]["method"] == ""
    fake = rows["Deepfakes/000_001.mp4"]
    assert fake["label"] == 1 and fake["method"] == "Deepfakes"
    assert fake["group"] == rows["youtube/000.mp4"]["video_id"] == "original_sequences/youtube/c23/videos/000"
    assert rows["Face2Face/001_000.mp4"]["group"] == rows["youtube/001.mp4"]["video_id"]
    # Its original was not downloaded: the group still names it, so its other fakes would join it.
    assert rows["NeuralTextures/002_005.mp4"]["group"] == "original_sequences/youtube/c23/videos/002"
