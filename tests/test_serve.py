"""`fakefinder serve` in a real headless Chromium (Debian's, driven by Playwright), and its JSON API over HTTP."""

from __future__ import annotations

import html
import json
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from media import coffee, huge_png, write_video
from services import free_port, require, started, wait_until

from fakefinder import SynthSettings, synth

pytestmark = pytest.mark.slow  # a trained model served by real servers (and Chromium: `services`)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"]


# `fakefinder serve` with its verdicts held: each one, as it starts, says "verdict held" on stdout and waits for a
# permit, which the test gives by writing a count on stdin (end of input gives them all). A test then knows that
# verdicts are running, and keeps them running while it looks: no sleeping, no clocks.
HOLD_VERDICTS = """
import sys, threading
from fakefinder.inference.detector import Detector
permits, say = threading.Semaphore(0), threading.Lock()
def give():
    for line in sys.stdin:
        permits.release(int(line))
    permits.release(10_000)
threading.Thread(target=give, daemon=True).start()
verdict = Detector.predict_video
def held(self, *args, **kwargs):
    with say:
        sys.stdout.write("verdict held\\n")
        sys.stdout.flush()
    permits.acquire()
    return verdict(self, *args, **kwargs)
Detector.predict_video = held
from fakefinder._cli import main
sys.exit(main(sys.argv[1:]))
"""


@contextmanager
def server(*args, host: str = "127.0.0.1", hold: bool = False, env: dict | None = None):
    """`fakefinder serve ARGS` on a free port, once it answers: its URL and its process (or, with `hold`, its
    `Held` verdicts)."""
    port = free_port()
    url = f"http://{host}:{port}"
    start = ["-c", HOLD_VERDICTS] if hold else ["-m", "fakefinder"]
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE} if hold else {}
    with started([sys.executable, *start, "serve", "--host", host, "--port", str(port), *map(str, args)], url,
                 ready="/api/models", env=env, **pipes) as proc:
        yield url, Held(proc) if hold else proc


class Held:
    """The held verdicts of a server started with `hold`."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc, self._started = proc, threading.Semaphore(0)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.strip() == "verdict held":
                self._started.release()

    def started(self, count: int) -> None:
        """Until `count` more verdicts have started (each now waits for its permit)."""
        for n in range(count):
            assert self._started.acquire(timeout=120), f"only {n} of {count} verdicts started"

    def release(self, count: int) -> None:
        self.proc.stdin.write(f"{count}\n")
        self.proc.stdin.flush()


def http(method: str, url: str, *, data: bytes | None = None, headers: dict | None = None, timeout: float = 120):
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def finished(url: str, location: str) -> tuple[int, bytes]:
    """A job's answer once its verdict is in (200, or 422 when it failed); until then it is 202 and says how far."""
    def ready():
        status, raw, _ = http("GET", url + location)
        if status != 202:
            return status, raw
        assert json.loads(raw)["state"] in ("queued", "running")

    return wait_until(ready, f"the verdict of {location}")


def multipart(path: Path, model: str | None = None) -> tuple[bytes, dict]:
    boundary = "----fakefinder-test-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
             f"Content-Type: application/octet-stream\r\n\r\n".encode() + path.read_bytes() + b"\r\n"]
    if model:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\n{model}\r\n'.encode())
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


@pytest.fixture(scope="module")
def model_file(baseline):
    return baseline.model_path


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    one = synth(tmp_path_factory.mktemp("clips") / "one",
                SynthSettings(videos=2, seed=8, seconds=3, sizes=((854, 480),), methods=("swap",)))
    two = synth(tmp_path_factory.mktemp("clips") / "two",
                SynthSettings(videos=2, seed=9, seconds=2, people=2, sizes=((960, 540),), methods=("swap",)))
    return [one.out / f"{v.name}.mp4" for v in one.videos], [two.out / f"{v.name}.mp4" for v in two.videos]


@pytest.fixture(scope="module")
def running(model_file, tmp_path_factory):
    allowed = tmp_path_factory.mktemp("allowed")
    with server("--model", f"lite={model_file}", "--upload-limit", "1", "--allow-dir", allowed) as (url, proc):
        yield url, proc, allowed


@pytest.fixture(scope="module")
def held(model_file):
    """A server whose verdicts wait until the test lets them go: as many at once as 40 waiting uploads."""
    with server("--model", f"lite={model_file}", "--concurrent-verdicts", "40", "--queue", "64", hold=True) as up:
        yield up


@pytest.fixture(scope="module")
def browser():
    require(CHROMIUM is not None, "Chromium is not installed (.ci/run installs Debian's chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "Playwright is not installed (pip install playwright)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)
        yield b
        b.close()


def predict_json(model_file: Path, clip: Path, *extra) -> dict:
    proc = subprocess.run([sys.executable, "-m", "fakefinder", "predict", str(model_file), str(clip), "--json", "-",
                           "--quiet", *extra], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)[0]


@pytest.mark.services
def test_a_clip_dropped_on_the_page_gets_a_verdict_with_timeline_frames_and_heatmaps(
        running, browser, clips, model_file, tmp_path):
    url, _, _ = running
    clip = clips[0][1]  # a fake
    page = browser.new_page(accept_downloads=True)
    held = []  # the page's status polls after the verdict, answered only when the test says

    def hold_after_the_verdict(route) -> None:
        response = route.fetch()
        if response.json().get("state") == "done" and (held.append((route, response)) or len(held) > 1):
            return
        route.fulfill(response=response)

    page.route("**/api/jobs/*/status", hold_after_the_verdict)
    page.goto(url)
    page.wait_for_selector("#model option", state="attached")
    page.set_input_files("#file", str(clip))
    page.wait_for_selector("#verdict:not([hidden])", timeout=120_000)
    # The verdict is on the page while its heatmaps are still pending for it: it never waits for them.
    page.wait_for_selector("#heatmaps[data-state=pending]", timeout=10_000)
    for _ in range(100):  # the page's first poll for its heatmaps reaches the route (and is held there)
        if len(held) >= 2:
            break
        page.wait_for_timeout(100)
    assert len(held) >= 2 and page.locator("#heatmaps img").count() == 0
    assert "computing heatmaps" in page.locator("#heatmaps").inner_text()
    page.unroute("**/api/jobs/*/status")  # the held polls, and all from now on, go through to the server
    page.wait_for_selector("#heatmaps[data-state=ready]", timeout=60_000)
    expected = predict_json(model_file, clip)
    points = page.locator("#timeline .point")
    assert points.count() == expected["frames_sampled"] == 6  # one point per sampled frame (3 s at the model's 2 fps)
    assert page.locator("#pfake").inner_text() == f"{round(expected['p_fake'] * 100)}%"
    # How much to trust it, in words: the model's name, its data, test AUC with its interval, and its rule
    evidence = page.locator("#evidence").inner_text()
    assert evidence.startswith("swap-efficientnet_lite0 was trained on ") and "test AUC is" in evidence, evidence
    assert "95% interval" in evidence and "videos never used to choose anything" in evidence
    assert page.locator("#meaning").inner_text().endswith(expected["rule"])
    assert "INCONCLUSIVE" not in expected["rule"] and "too few videos" in expected["rule"]  # the LR decides that
    assert page.locator("#verdict-word").inner_text() == expected["verdict"]
    # The page leads with the strength of evidence in words, coloured by the scale, and keeps the decision
    strength = expected["strength"]
    assert page.locator("#strength").inner_text() == strength["sentence"]
    assert strength["sentence"].startswith("Scores like this are ") and strength["support"] in strength["sentence"]
    assert page.locator("#strength").get_attribute("class") == f"lead {strength['colour']}"
    assert f"decision is {expected['decision']}" in page.locator("#plain").inner_text()
    assert "Cllr" in page.locator("#strength-summary").inner_text()
    points.nth(1).hover()
    page.wait_for_function("() => { const i = document.getElementById('thumb'); "
                           "return i.complete && i.naturalWidth > 0 && i.dataset.index === '"
                           f"{expected['frames'][1]['index']}'" + "; }")
    assert page.locator("#boxes rect.face-box").count() == len(expected["frames"][1]["faces"])
    heatmaps = page.locator("#heatmaps img.heatmap")
    assert heatmaps.count() >= 1
    page.wait_for_function("() => [...document.querySelectorAll('#heatmaps img')].every("
                           "i => i.complete && i.naturalWidth > 0)")
    with page.expect_download() as info:
        page.click("#download-json")
    downloaded = json.loads(Path(info.value.path()).read_text())
    assert {k: v for k, v in downloaded.items() if k != "input"} == {
        k: v for k, v in expected.items() if k != "input"}
    assert downloaded["input"] == clip.name
    with page.expect_download() as info:
        page.click("#download-report")
    report = Path(info.value.path()).read_text()
    assert "fakefinder verdict" in report and "data:image/png;base64," in report
    assert f'<p class="lead {strength["colour"]}">' in report and html.escape(strength["sentence"]) in report
    assert not re.search(r'(src|href)="(https?:)?//', report)  # self-contained: nothing to fetch
    page.reload()  # the job survives a reload
    page.wait_for_selector("#verdict:not([hidden])", timeout=60_000)
    assert page.locator("#timeline .point").count() == 6
    page.screenshot(path=str(tmp_path / "verdict.png"), full_page=True)
    page.close()


@pytest.mark.services
def test_a_two_person_clip_shows_two_tracks(running, browser, clips, model_file):
    url, _, _ = running
    clip = clips[1][1]
    page = browser.new_page()
    page.goto(url)
    page.wait_for_selector("#model option", state="attached")
    page.set_input_files("#file", str(clip))
    page.wait_for_selector("#verdict:not([hidden])", timeout=120_000)
    assert page.locator("#tracks tr.track").count() == 2
    assert page.locator("#tracks tr.track", has_text="decides the verdict").count() == 1
    page.close()


@pytest.mark.parametrize("case,message", [("text", "not a video or an image (text"), ("empty", "the file is empty"),
                                          ("too_big", "larger than the 1 MB limit")])
@pytest.mark.services
def test_bad_uploads_get_a_clear_message_and_the_server_keeps_serving(running, browser, tmp_path, case, message):
    url, proc, _ = running
    bad = tmp_path / "clip.mp4"
    if case == "text":
        bad.write_text("this is not a video\n" * 50)
    elif case == "empty":
        bad.write_bytes(b"")
    else:
        bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2 * 2**20))
    page = browser.new_page()
    page.goto(url)
    page.wait_for_selector("#model option", state="attached")
    page.set_input_files("#file", str(bad))
    page.wait_for_function("() => document.getElementById('message').className === 'error'")
    assert message in page.locator("#message").inner_text()
    page.close()
    status, body, _ = http("GET", f"{url}/api/models")
    assert status == 200 and proc.poll() is None


def test_the_json_api_answers_202_then_the_verdict_of_predict_json(running, clips, model_file):
    url, _, _ = running
    clip = clips[0][0]
    body, headers = multipart(clip, "lite")
    status, raw, answer_headers = http("POST", f"{url}/api/predict", data=body, headers=headers)
    assert status == 202 and answer_headers["location"].startswith("/api/jobs/")
    status, raw = finished(url, answer_headers["location"])
    assert status == 200
    got, expected = json.loads(raw), predict_json(model_file, clip)
    assert {k: v for k, v in got.items() if k != "input"} == {k: v for k, v in expected.items() if k != "input"}
    status_url = url + answer_headers["location"] + "/status"  # the heatmaps come after the verdict: it says when
    job = wait_until(lambda: (j := json.loads(http("GET", status_url)[1]))["heatmaps"] != "pending" and j,
                     "the heatmaps")
    assert job["state"] == "done" and job["heatmaps"] == "ready"
    view = json.loads(http("GET", url + answer_headers["location"] + "/view")[1])
    assert 1 <= len(view["heatmaps"]) <= 4
    status, raw, _ = http("POST", f"{url}/api/predict?wait=60", data=body, headers=headers)  # or in one call
    assert status == 200 and json.loads(raw)["p_fake"] == expected["p_fake"]
    status, raw, _ = http("GET", f"{url}/api/models")
    assert status == 200 and json.loads(raw)[0]["name"] == "lite"


def test_downloads_of_an_upload_with_a_non_latin_name(running, clips, tmp_path):
    url, _, _ = running
    clip = tmp_path / "видео клип.mp4"
    shutil.copy(clips[0][0], clip)
    body, headers = multipart(clip)
    status, raw, answer = http("POST", f"{url}/api/predict", data=body, headers=headers)
    assert status == 202, raw
    job = {k.lower(): v for k, v in answer.items()}["location"]
    assert finished(url, job)[0] == 200
    status, _, answer = http("GET", f"{url}{job}/report.html")
    assert status == 200, answer
    disposition = {k.lower(): v for k, v in answer.items()}["content-disposition"]
    assert "filename*=UTF-8''%D0%B2%D0%B8%D0%B4%D0%B5%D0%BE%20%D0%BA%D0%BB%D0%B8%D0%BF-verdict.html" in disposition


def test_several_uploads_run_at_once_without_blocking_the_server(held, clips):
    """Four uploads: their four verdicts run at once (held while they run), the server answers meanwhile, and let
    go, each gives the same verdict."""
    url, verdicts = held
    body, headers = multipart(clips[0][0])
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(http, "POST", f"{url}/api/predict?wait=120", data=body, headers=headers)
                   for _ in range(4)]
        verdicts.started(4)
        status, _, _ = http("GET", f"{url}/api/models", timeout=30)  # answered while the verdicts run
        assert status == 200 and not any(f.done() for f in futures)
        verdicts.release(4)
        results = [f.result() for f in futures]
    assert [s for s, _, _ in results] == [200] * 4, [b[:300] for _, b, _ in results]
    assert len({json.loads(b)["p_fake"] for _, b, _ in results}) == 1


@pytest.mark.parametrize("path", [
    "/api/jobs/../../etc/passwd", "/api/jobs/..%2F..%2Fetc%2Fpasswd/status", "/api/jobs/%2e%2e/view",
    "/api/jobs/0123456789abcdef0123456789abcdef/frames/..%2F..%2Fresult.jpg",
    "/api/jobs/0123456789abcdef0123456789abcdef/heatmaps/..%2F0.png", "/static/..%2F..%2Fjobs.py",
    "/static/../app.py", "/api/jobs/0123456789abcdef0123456789abcdef/result.json"])
def test_requests_with_dot_dot_in_any_parameter_get_a_4xx(running, path):
    url, _, _ = running
    status, raw, _ = http("GET", url + path)
    assert 400 <= status < 500
    assert b"root:" not in raw and b"import" not in raw


def test_server_paths_only_under_allow_dir_and_models_only_by_name(running, clips, tmp_path):
    url, _, allowed = running
    shutil.copy(clips[0][0], allowed / "ok.mp4")
    boundary = "----b"

    def form(**fields) -> tuple[bytes, dict]:
        body = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
                       for k, v in fields.items()) + f"--{boundary}--\r\n"
        return body.encode(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}

    status, raw, _ = http("POST", f"{url}/api/predict?wait=60", *(), **dict(zip(("data", "headers"),
                                                                              form(path="ok.mp4"))))
    assert status == 200 and json.loads(raw)["faces"] > 0
    for bad in ("../" * 8 + "etc/passwd", str(clips[0][0]), "ok.mp4/../../x.mp4"):
        data, headers = form(path=bad)
        status, raw, _ = http("POST", f"{url}/api/predict", data=data, headers=headers)
        assert status in (403, 404) and "error" in json.loads(raw)
    data, headers = multipart(clips[0][0], "../../model")
    status, raw, _ = http("POST", f"{url}/api/predict", data=data, headers=headers)
    assert status == 404 and "unknown model" in json.loads(raw)["error"]


def test_another_address_needs_a_token_and_the_token_is_checked(model_file):
    proc = subprocess.run([sys.executable, "-m", "fakefinder", "serve", "--model", str(model_file), "--host",
                           "0.0.0.0"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--token" in proc.stderr
    with server("--model", model_file, "--token", "s3cret") as (url, _):
        assert http("GET", f"{url}/api/models")[0] == 401
        assert http("GET", f"{url}/api/models", headers={"Authorization": "Bearer wrong"})[0] == 401
        assert http("GET", f"{url}/api/models", headers={"Authorization": "Bearer s3cret"})[0] == 200
        assert http("GET", f"{url}/?token=s3cret")[0] == 200


def test_finished_jobs_are_deleted_after_the_retention_time(model_file, clips, tmp_path):
    from fakefinder import ServeSettings
    from fakefinder.serve.jobs import JobQueue

    queue = JobQueue({"m": str(model_file)}, ServeSettings(retention=0.5, concurrent_verdicts=1),
                     root=tmp_path / "jobs")
    try:
        job = queue.new_job("clip.mp4", None)
        job.created -= 3600  # submitted long ago, as a long video's job would be: retention counts from the end
        shutil.copy(clips[0][0], queue.input_path(job))
        queue.submit_file(job)
        queue.wait(job, 120)
        assert job.state == "done" and job.folder.is_dir() and not queue.input_path(job).exists()
        assert queue.sweep() == 0 and job.folder.is_dir()
        job.finished -= 31
        assert queue.sweep() == 1 and not job.folder.exists()
        assert (tmp_path / "jobs").stat().st_mode & 0o777 == 0o700
        kept = queue.new_job("other.mp4", None)
        (tmp_path / "jobs" / "mine.txt").write_text("the caller's")
    finally:
        queue.close()
    assert not kept.folder.exists() and (tmp_path / "jobs" / "mine.txt").is_file()  # the caller's folder stays


def test_predict_writes_face_tracks_and_explain_heatmaps(model_file, clips, tmp_path):
    expected = predict_json(model_file, clips[1][1], "--explain", str(tmp_path / "heat"))
    assert len(expected["tracks"]) >= 1
    written = sorted((tmp_path / "heat").glob("*.png"))
    assert 1 <= len(written) <= 4
    import cv2

    for png in written:
        image = cv2.imread(str(png))
        assert image is not None and image.shape[0] > 32


def test_a_chunked_upload_over_the_limit_is_cut_off_at_the_limit(running):
    """--upload-limit 1 (MB): a chunked 200 MB body declares no length; the server stops reading near the limit
    and answers 413, instead of reading (and spooling to disk) all of it first."""
    url, _, _ = running
    host, port = urlsplit(url).hostname, urlsplit(url).port
    head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.mp4"\r\n\r\n'
    block = b"\0" * (1 << 20)
    sent, answer = 0, b""
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: %s:%d\r\nTransfer-Encoding: chunked\r\n"
                  b"Content-Type: multipart/form-data; boundary=b\r\n\r\n%x\r\n%s\r\n"
                  % (host.encode(), port, len(head), head))
        try:
            while sent < 200 << 20 and not select.select([s], [], [], 0)[0]:
                s.sendall(b"%x\r\n%s\r\n" % (len(block), block))
                sent += len(block)
            answer = s.recv(1 << 16)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # it stopped reading, and closed (its 413 may be lost to the reset)
    assert sent < 40 << 20, f"the server read {sent >> 20} MB of a 1 MB limit"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert http("GET", f"{url}/api/models")[0] == 200  # and it goes on serving


def test_waiting_clients_do_not_starve_other_requests(held, tmp_path):
    """40 uploads waiting for their verdicts (more than any default thread pool), every verdict held: the model list
    (read in a thread) and a bad upload are still answered."""
    url, verdicts = held
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(4096))  # an MP4 by its first bytes: fails once let go
    body, headers = multipart(clip)
    with ThreadPoolExecutor(40) as pool:
        waiting = [pool.submit(http, "POST", f"{url}/api/predict?wait=600", data=body, headers=headers)
                   for _ in range(40)]
        verdicts.started(40)  # every upload in and waiting
        for method, path, data in (("GET", "/api/models", None), ("POST", "/api/predict", b"twelve bytes")):
            status, _, _ = http(method, url + path, data=data, timeout=30,
                                headers={"Content-Type": "multipart/form-data; boundary=x"} if data else None)
            assert status in (200, 400), (path, status)
        assert not any(f.done() for f in waiting)
        verdicts.release(40)
        assert [f.result()[0] for f in waiting] == [422] * 40


def test_only_the_bound_host_names_and_the_servers_own_pages_are_answered(running, model_file):
    """DNS rebinding (a name that now points here) and pages of other origins are refused; loopback names and the
    page's own origin are not. Another loopback address needs no token."""
    url, _, _ = running
    netloc = urlsplit(url).netloc
    port = urlsplit(url).port
    for host in ("rebind.evil.example", f"rebind.evil.example:{port}", "10.0.0.1"):
        status, raw, _ = http("GET", f"{url}/api/models", headers={"Host": host})
        assert status == 421 and "does not answer to the host name" in json.loads(raw)["error"]
    status, raw, _ = http("GET", f"{url}/api/models", headers={"Origin": "https://evil.example"})
    assert status == 403 and "refused" in json.loads(raw)["error"]
    data, headers = multipart(Path(__file__))
    status, _, _ = http("POST", f"{url}/api/predict", data=data, headers={**headers, "Origin": "http://evil.example"})
    assert status == 403
    for host in (netloc, f"localhost:{port}"):
        assert http("GET", f"{url}/api/models", headers={"Host": host, "Origin": f"http://{host}"})[0] == 200
    with server("--model", model_file, host="127.0.0.2") as (other, _):
        assert http("GET", f"{other}/api/models")[0] == 200


def without(tmp_path, *modules) -> dict:
    """An environment in which `modules` fail to import, as where their extra is not installed."""
    stubs = tmp_path / "stubs"
    for module in modules:
        (stubs / module).mkdir(parents=True)
        (stubs / module / "__init__.py").write_text(f"raise ModuleNotFoundError({f'No module named {module!r}'!r}, "
                                                    f"name={module!r})\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(stubs), os.environ.get("PYTHONPATH")]))}


def fakefinder_cli(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fakefinder", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=120)


@pytest.mark.parametrize("module", ["python_multipart", "captum"])
def test_serve_without_its_extra_says_how_to_install_it_before_starting(model_file, tmp_path, module):
    hidden = (module, "multipart") if module == "python_multipart" else (module,)  # python-multipart ships both
    proc = fakefinder_cli("serve", "--model", model_file, "--port", free_port(), env=without(tmp_path, *hidden))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and proc.stdout == "" and len(lines) == 1, proc.stderr
    assert module in lines[0] and "pip install 'fakefinder[serve]'" in lines[0]


def test_predict_explain_checks_captum_and_its_folder_before_the_work(model_file, clips, tmp_path):
    clip = clips[0][0]
    proc = fakefinder_cli("predict", model_file, clip, "--explain", tmp_path / "heat", env=without(tmp_path, "captum"))
    assert proc.returncode == 2 and proc.stdout == "" and proc.stderr.strip().splitlines() == [
        "fakefinder predict: error: --explain needs captum, which is not installed: pip install 'fakefinder[serve]'"]
    (tmp_path / "afile").write_text("x")
    proc = fakefinder_cli("predict", model_file, clip, "--explain", tmp_path / "afile")
    assert proc.returncode == 2 and proc.stdout == "" and "not a folder" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_serve_checks_its_port_and_says_when_it_is_taken(model_file):
    proc = fakefinder_cli("serve", "--model", model_file, "--port", "99999")
    assert proc.returncode == 2 and "must be a port number" in proc.stderr and "Traceback" not in proc.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = fakefinder_cli("serve", "--model", model_file, "--port", port)
    assert proc.returncode == 2 and "http://" not in proc.stdout, proc.stdout  # no URL of another program
    assert proc.stderr.strip().splitlines() == [f"fakefinder serve: error: cannot listen on 127.0.0.1:{port}: "
                                                "Address already in use"]


def test_the_server_refuses_inputs_over_its_stricter_limits_at_once(running, tmp_path):
    """A 2 KB PNG claiming 16000x16000 pixels and an hour of 32 px video: each refused before a frame is decoded,
    with one line (serve's limits: 40 megapixels, 10 minutes; the CLI's are 100 and 240)."""
    url, _, _ = running
    bomb = huge_png(tmp_path / "bomb.png", 16000, 16000)
    hour = write_video(tmp_path / "hour.mp4", coffee(), seconds=3600, fps=1, size=(32, 32))
    for path, message in ((bomb, "16000x16000: 256 megapixels, over the limit of 40"),
                          (hour, "the video lasts 60.0 minutes, over the limit of 10")):
        data, headers = multipart(path)
        status, raw, headers = http("POST", f"{url}/api/predict", data=data, headers=headers)
        assert status == 202, raw
        job = {k.lower(): v for k, v in headers.items()}["location"]
        status, raw = finished(url, job)
        assert (status, json.loads(raw)["error"]) == (422, message)
        assert json.loads(http("GET", f"{url}{job}/status")[1])["frames"] == 0  # at once: nothing was decoded


def test_ctrl_c_during_a_verdict_leaves_no_upload_behind(model_file, tmp_path):
    """The server's private folder of uploads and thumbnails goes when it stops, even mid-verdict."""
    import signal

    long_clip = write_video(tmp_path / "long.mp4", coffee(), seconds=120, fps=5, size=(320, 240))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    with server("--model", model_file, env={**os.environ, "TMPDIR": str(scratch)}) as (url, proc):
        data, headers = multipart(long_clip)
        status, raw, _ = http("POST", f"{url}/api/predict", data=data, headers=headers)
        assert status == 202, raw
        job = json.loads(raw)["id"]
        wait_until(lambda: json.loads(http("GET", f"{url}/api/jobs/{job}/status")[1])["frames"] >= 2,
                   "two frames sampled")  # running: frames are being sampled and thumbnails written
        assert list(scratch.iterdir())  # its folder exists while it serves
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    # ONNX Runtime 1.32 writes its telemetry session id to $TMPDIR/.ses when imported: not ours to remove
    assert [p for p in scratch.iterdir() if p.name != ".ses"] == []


def test_malformed_requests_get_a_json_4xx_that_says_what_was_wrong(running):
    url, _, _ = running
    boundary = "----b"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="path"\r\n\r\nok\0.mp4\r\n--{boundary}--\r\n')
    status, raw, _ = http("POST", f"{url}/api/predict", data=body.encode(),
                          headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 400 and json.loads(raw)["error"] == "a path may not contain a NUL byte"
    huge_header = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{"a" * (1 << 20)}.mp4"'
                   f'\r\n\r\nxx\r\n--{boundary}--\r\n')
    status, raw, _ = http("POST", f"{url}/api/predict", data=huge_header.encode(),
                          headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    error = json.loads(raw)["error"]
    assert 400 <= status < 500 and error.startswith("not a multipart form with a file (") and "Exception" not in error


def test_a_verdict_past_the_inference_timeout_fails_in_one_line_and_its_upload_goes(tmp_path):
    """A video that never ends (a detector reading frames for ever here) holds its slot until the deadline, then
    fails with a one-line error, and its upload is deleted."""
    from fakefinder import ServeSettings
    from fakefinder.serve.jobs import JobQueue

    class Endless:
        explains = False

        def predict_video(self, path, *, on_progress, **_):
            for frames in range(1, 10**12):
                on_progress(frames, 0)

    clip = write_video(tmp_path / "clip.mp4", coffee(), seconds=1, fps=5, size=(64, 48))
    queue = JobQueue({"m": str(tmp_path / "never-loaded.safetensors")}, ServeSettings(inference_timeout=1),
                     root=tmp_path / "jobs")
    queue.models.detector = lambda name: Endless()
    try:
        job = queue.new_job("clip.mp4", None)
        shutil.copy(clip, queue.input_path(job))
        queue.submit_file(job)
        queue.wait(job, 60)
        assert job.state == "failed" and "\n" not in job.error and "--inference-timeout" in job.error, job.error
        assert job.frames > 0 and not queue.input_path(job).exists()
    finally:
        queue.close()
