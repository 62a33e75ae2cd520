"""demo.py: MNIST's preparation of a drawn digit, the API against a real server, a server that lets go of stalled
clients and survives a damaged model, and the page in a real browser."""
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
import torch.nn.functional as F

import common
from lab import net_of
from harness import cli, errors, files, provenance
import demo
from conftest import ROOT, assert_clean_failure, run_script


def _canvas(digit, side, top, left, size):
    """A test digit (28×28 uint8) drawn into a black side×side canvas at (top, left), scaled to size×size."""
    canvas = torch.zeros(side, side)
    big = F.interpolate(digit.float()[None, None] / 255, size=(size, size), mode="bilinear", align_corners=False)
    canvas[top:top + size, left:left + size] = big[0, 0].clamp(0, 1)
    return canvas


def test_a_digit_drawn_anywhere_at_any_size_becomes_the_same_input(mnist):
    digit = mnist["test"][0][3]
    placements = [(280, 10, 20, 120), (280, 140, 150, 130), (112, 30, 5, 60), (280, 0, 0, 280)]
    prepared = [demo.prepare_digit(_canvas(digit, *p)) for p in placements]
    for other in prepared[1:]:
        assert (other - prepared[0]).abs().mean() < 0.03
    ink = (prepared[0] > 0.05).nonzero()
    height, width = (ink.max(0).values - ink.min(0).values + 1).tolist()
    assert max(height, width) == 20  # the longer side scaled to 20 px
    rows, cols = torch.arange(28.0), torch.arange(28.0)
    mass = prepared[0].sum()
    centre = ((prepared[0].sum(1) @ rows) / mass, (prepared[0].sum(0) @ cols) / mass)
    assert abs(centre[0] - 13.5) <= 1 and abs(centre[1] - 13.5) <= 1  # centre of mass at the centre


@pytest.mark.committed
def test_test_digits_pushed_through_the_preparation_keep_their_class(mnist):
    net = __import__("model3").Net()
    net.load_state_dict(files.load_state_dict(ROOT / "results" / "model3" / "model.pt"))
    net.eval()
    images = mnist["test"][0][:300]
    normalise = lambda x: (x - mnist["mean"]) / mnist["std"]  # noqa: E731
    with torch.inference_mode():
        direct = net(normalise(images.float() / 255).unsqueeze(1)).argmax(1)
        drawn = torch.stack([demo.prepare_digit(_canvas(d, 280, 40, 30, 200)) for d in images])
        prepared = net(normalise(drawn).unsqueeze(1)).argmax(1)
    assert (direct == prepared).float().mean() >= 0.97


@contextlib.contextmanager
def _serving(server):
    """`server` serving in a thread; yields its URL."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def server(smoke_runs, data_dir):
    """The page serving the smoke runs' results/: every step trained by today's code, whatever a learner has
    edited (their accuracy is a few hundred updates', not the committed runs')."""
    results = smoke_runs["model3"][1].parent
    with _serving(demo.make_server("127.0.0.1", 0, results, data_dir, log=lambda *_: None)) as url:
        yield url


@pytest.fixture(scope="module")
def committed_server(data_dir):
    """The page serving the committed results/, as a fresh clone serves it."""
    with _serving(demo.make_server("127.0.0.1", 0, ROOT / "results", data_dir, log=lambda *_: None)) as url:
        yield url


def _address(url):
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def _request(url, body=None, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _drawn_one(side=56):
    pixels = [0.0] * (side * side)
    for row in range(10, 46):
        for col in range(25, 31):
            pixels[row * side + col] = 1.0
    return pixels


def test_a_drawing_gets_every_steps_prediction_and_feature_maps(server, smoke_runs):
    status, answer = _request(server + "/api/predict", {"pixels": _drawn_one(), "step": "model3"})
    assert status == 200
    assert len(answer["input"]) == 784 and max(answer["input"]) > 0.5
    assert set(answer["steps"]) == set(common.STEPS)
    for step, info in answer["steps"].items():  # every step trained by today's code: each one predicts
        assert info["available"] and 0 <= info["prediction"] <= 9, info
        assert sum(info["probabilities"]) == pytest.approx(1, abs=1e-3)
    net = demo.Models(smoke_runs["model3"][1].parent, dict(mean=0.1307, std=0.3081), log=pytest.fail).nets["model3"]
    blocks = common.feature_maps(net, torch.tensor(answer["input"]).reshape(28, 28))
    assert answer["feature_step"] == "model3" and [f["rf"] for f in answer["features"]] == [rf for _, rf, _ in blocks]


@pytest.mark.committed
def test_the_committed_steps_read_a_drawn_one_and_the_others_say_what_training_costs(committed_server):
    status, answer = _request(committed_server + "/api/predict", {"pixels": _drawn_one(), "step": "model3"})
    assert status == 200
    model3 = answer["steps"]["model3"]
    assert model3["available"] and model3["prediction"] == 1 and sum(model3["probabilities"]) == pytest.approx(1, abs=1e-3)
    assert answer["feature_step"] == "model3" and [f["rf"] for f in answer["features"]][:2] == [3, 5]
    for step, info in answer["steps"].items():
        assert info["available"] or info["make"] == f"make {step}"
        if not info["available"]:  # steps 1 and 2 on a fresh clone: their committed run says what training costs
            assert info["takes"] == demo.how_long(ROOT / "results" / step / "metrics.json")


@pytest.mark.parametrize("body, code, words", [
    (b"{broken", 400, "not valid JSON"), (b"[1, 2]", 400, "expected a JSON object"),
    (json.dumps({"pixels": [0.5] * 100}).encode(), 400, "square image"),
    (json.dumps({"pixels": ["a"] * 784}).encode(), 400, "must be a number"),
    (json.dumps({"pixels": [2.0] * 784}).encode(), 400, "grey level in 0..1"),
    (json.dumps({"pixels": [0.0] * 784}).encode(), 400, "no ink"),
    (json.dumps({"pixels": [0.5] * 784, "step": "model9"}).encode(), 400, "unknown step"),
])
def test_bad_requests_get_a_4xx_with_a_message_and_the_server_keeps_serving(server, body, code, words):
    status, answer = _request(server + "/api/predict", raw=body)
    assert status == code and words in answer["error"]
    assert _request(server + "/api/info")[0] == 200


def _with_pixel(value):
    """The body of a drawn one whose first pixel is `value`, as JSON text (any literal: NaN, 1e400, 10**400)."""
    pixels = _drawn_one()
    return ('{"pixels": [' + ", ".join([str(value)] + [str(p) for p in pixels[1:]]) + "]}").encode()


MALFORMED = {  # whatever the page cannot parse: a 400 that says why (the first five were a 500 once)
    "nested too deep": b"[" * 100_000 + b"]" * 100_000,
    "pixels nested too deep": b'{"pixels": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    "a key nested too deep": b'{"pixels": [0], "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "an integer too large for a float": _with_pixel(10 ** 400),
    "a negative one": _with_pixel(-10 ** 400),
    "an integer of 5,000 digits": _with_pixel("9" * 5000),
    "NaN": _with_pixel("NaN"), "Infinity": _with_pixel("Infinity"), "1e400": _with_pixel("1e400"),
    "a large integer": _with_pixel(2 ** 63), "true": _with_pixel("true"), "null": _with_pixel("null"),
    "a string": _with_pixel('"0.5"'), "a list": _with_pixel("[0.5]"), "an object": _with_pixel("{}"),
    "not UTF-8": b'\xff\xfe\xfd{"pixels": []}', "odd UTF-16": json.dumps({"pixels": [0] * 784}).encode("utf-16")[:-1],
    "empty": b"", "NUL bytes": b"\0" * 64, "trailing junk": _with_pixel(0) + b"}",
    "a list where an object goes": json.dumps([{"pixels": [0.5] * 784}]).encode(),
    "a number": b"3", "a string body": b'"pixels"', "null body": b"null",
    "no pixels": json.dumps({"step": "model3"}).encode(),
    "pixels an object": json.dumps({"pixels": {"0": 1}}).encode(),
    "pixels a string": json.dumps({"pixels": "0" * 784}).encode(),
    "rows of pixels": json.dumps({"pixels": [[0.5] * 28] * 28}).encode(),
    "no pixels at all": json.dumps({"pixels": []}).encode(),
    "one short": json.dumps({"pixels": [0.5] * 783}).encode(),
    "too large": json.dumps({"pixels": [0] * 281 ** 2}).encode(),
    "a step that is a list": json.dumps({"pixels": _drawn_one(), "step": ["model3"]}).encode(),
    "a step that is an object": json.dumps({"pixels": _drawn_one(), "step": {"model3": 1}}).encode(),
    "a step that is NaN": json.dumps({"pixels": _drawn_one(), "step": float("nan")}).encode(),
    "a step nested deep": json.dumps({"pixels": _drawn_one()}).encode()[:-1] + b', "step": ' + b"[" * 900
    + b"]" * 900 + b"}",
    "a step of 500,000 letters": json.dumps({"pixels": _drawn_one(), "step": "x" * 500_000}).encode(),
    "a step with a lone surrogate": json.dumps({"pixels": _drawn_one()}).encode()[:-1] + b', "step": "\\ud800"}',
}


def test_any_body_the_page_cannot_parse_is_a_400_in_one_line_and_the_server_keeps_serving(server):
    for name, body in MALFORMED.items():
        status, answer = _request(server + "/api/predict", raw=body)
        assert status == 400, (name, answer)
        assert answer["error"] and "\n" not in answer["error"] and len(answer["error"]) < 400, (name, answer)
    status, answer = _request(server + "/api/predict", {"pixels": _drawn_one(), "step": "model3"})
    assert status == 200 and 0 <= answer["steps"]["model3"]["prediction"] <= 9


def test_what_parsing_did_not_foresee_is_a_400_and_a_fault_in_prediction_a_500(server, monkeypatch):
    def unforeseen(body):
        raise TypeError("a parser's surprise")
    monkeypatch.setattr(demo, "parse_pixels", unforeseen)
    status, answer = _request(server + "/api/predict", {"pixels": _drawn_one()})
    assert status == 400 and answer["error"] == "the body cannot be read as a request (TypeError: a parser's surprise)"
    monkeypatch.undo()

    def broken(self, digit, feature_step=None):
        raise ZeroDivisionError("a bug of the server's")
    monkeypatch.setattr(demo.Models, "predict", broken)
    status, answer = _request(server + "/api/predict", {"pixels": _drawn_one()})
    assert status == 500 and answer["error"] == "ZeroDivisionError: a bug of the server's"
    monkeypatch.undo()
    assert _request(server + "/api/predict", {"pixels": _drawn_one()})[0] == 200


def _reply(client, seconds=10):
    """Everything the server sends on `client` until it closes the connection."""
    client.settimeout(seconds)
    return client.makefile("rb").read()


@pytest.mark.parametrize("body_sent", [0, 32 * 1024])
def test_an_oversized_body_is_answered_413_at_once_and_the_connection_closed(server, body_sent):
    with socket.create_connection(_address(server), timeout=30) as client:
        head = f"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: {demo.MAX_BODY + 1}\r\n\r\n"
        client.sendall(head.encode() + b"0" * body_sent)
        start = time.monotonic()
        reply = _reply(client)  # the server answers and hangs up, the rest of the body unsent
        assert time.monotonic() - start < 2  # at once, not when the request's time is up
    assert reply.startswith(b"HTTP/1.0 413") and reply.endswith(b'"error": "the body is over 1,048,576 bytes"}')
    assert _request(server + "/api/info")[0] == 200


def test_a_body_shorter_than_declared_is_400(server):
    with socket.create_connection(_address(server), timeout=30) as client:
        client.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"{" * 10)
        client.shutdown(socket.SHUT_WR)
        reply = _reply(client)
    assert reply.startswith(b"HTTP/1.0 400") and b"the body ended after 10 of its 100 bytes" in reply


def _held_until_closed(client, until):
    """What the server sent on `client` before it closed it, or None if it still held it at `until`."""
    received = b""
    while (left := until - time.monotonic()) > 0:
        client.settimeout(left)
        try:
            chunk = client.recv(1 << 16)
        except TimeoutError:
            return None
        except ConnectionResetError:  # closed, and a trickled byte that came after turned it into a reset
            return received
        if not chunk:
            return received
        received += chunk
    return None


@pytest.mark.slow
def test_stalled_connections_are_let_go_while_a_normal_client_is_served(server, capfd):
    stalls = {  # what a stalled client sends, and how the server lets go of it
        "nothing": (b"", b""),
        "a request line": (b"GET /api/info HTTP/1.1\r\n", b"HTTP/1.0 408"),
        "headers, no body": (b"POST /api/predict HTTP/1.1\r\nContent-Length: 500\r\n\r\n", b"HTTP/1.0 408"),
    }
    opened = time.monotonic()
    clients = []
    for i in range(200):
        kind = list(stalls)[i % len(stalls)]
        client = socket.create_connection(_address(server), timeout=30)
        client.sendall(stalls[kind][0])
        clients.append((kind, client))
    # A few send a byte of their request line every half second: slow, never silent, never a whole request.
    trickling = [socket.create_connection(_address(server), timeout=30) for _ in range(4)]
    stop = threading.Event()

    def trickle():
        for byte in b"GET /api/info HTTP/1.1\r\n":
            for client in trickling:
                with contextlib.suppress(OSError):
                    client.send(bytes([byte]))
            if stop.wait(0.5):
                return
    threading.Thread(target=trickle, daemon=True).start()
    try:
        start = time.monotonic()
        assert _request(server + "/api/info")[0] == 200
        served = time.monotonic()
        assert served - start < 2  # at once, while every stalled connection is held
        assert served - opened < demo.REQUEST_TIMEOUT
        until = opened + demo.REQUEST_TIMEOUT + 3  # let go within a few seconds of the request's time
        for kind, client in clients:
            reply = _held_until_closed(client, until)
            assert reply is not None, f"a client that sent {kind} is still held"
            assert reply.startswith(stalls[kind][1]), (kind, reply)
        assert all(_held_until_closed(client, until) == b"" for client in trickling)
    finally:
        stop.set()
        for client in [c for _, c in clients] + trickling:
            client.close()
    assert _request(server + "/api/info")[0] == 200
    assert "Traceback" not in capfd.readouterr().err


def test_one_connection_over_the_bound_is_answered_503_at_once():
    server = demo.bind("127.0.0.1", 0, max_connections=3)  # no models needed: /nowhere is a 404
    with _serving(server) as url:
        held = [socket.create_connection(_address(url), timeout=30) for _ in range(3)]
        start = time.monotonic()
        assert _request(url + "/nowhere")[0] == 503
        assert time.monotonic() - start < 1
        for client in held:
            client.close()  # the server sees the end of a request that never came, and frees the slot
        deadline = time.monotonic() + 5
        while (status := _request(url + "/nowhere")[0]) == 503 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert status == 404


def test_unknown_paths_are_404(server):
    assert _request(server + "/nowhere")[0] == 404
    assert _request(server + "/api/nowhere", {"pixels": []})[0] == 404
    request = urllib.request.Request(server + "/api/predict", data=b"{}", method="PUT")
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=30)
    assert error.value.code == 405 and "not served" in json.loads(error.value.read())["error"]


def test_several_requests_at_once(server):
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: _request(server + "/api/predict", {"pixels": _drawn_one()}), range(16)))
    assert all(status == 200 for status, _ in answers)
    assert len({tuple(a["steps"]["model3"]["probabilities"]) for _, a in answers}) == 1


def test_samples_include_digits_step3_gets_wrong(server):
    status, answer = _request(server + "/api/samples")
    assert status == 200 and len(answer["samples"]) == demo.SAMPLES
    assert any(s["misclassified"] for s in answer["samples"]) and all(len(s["pixels"]) == 784 for s in answer["samples"])
    assert answer["judged_by"] == "model3"  # the page's caption names the step whose mistakes are framed


@pytest.mark.slow
def test_a_port_in_use_is_one_line_and_exit_2(data_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run_script("demo.py", "--port", taken.getsockname()[1], data_dir=data_dir, timeout=60)
    assert_clean_failure(result, 2, "already in use")
    assert len(result.stderr.strip().splitlines()) == 1


def _damage(path, kind, whole):
    """Write a damaged model.pt of one kind at `path`, from the `whole` file's bytes."""
    if kind == "truncated":
        path.write_bytes(whole[:len(whole) // 2])
    elif kind == "not a zip":
        path.write_bytes(b"not a model\n" * 100)
    else:  # unreadable: a folder where the file should be
        path.mkdir()


def _results_with_a_damaged_step(tmp_path, kind, smoke_runs):
    """A results folder where model3's model.pt is damaged and model4's is whole (the smoke runs')."""
    (tmp_path / "model3").mkdir()
    _damage(tmp_path / "model3" / "model.pt", kind, (smoke_runs["model3"][1] / "model.pt").read_bytes())
    shutil.copytree(smoke_runs["model4"][1], tmp_path / "model4",
                    ignore=lambda folder, names: [n for n in names if n not in ("model.pt", "metrics.json")])
    return tmp_path


@pytest.mark.parametrize("kind, why", [("truncated", "not a complete zip archive"),
                                       ("not a zip", "not a complete zip archive"),
                                       ("unreadable", "cannot read it (Is a directory)")])
def test_a_damaged_model_is_one_line_and_its_step_unavailable_the_others_served(tmp_path, data_dir, capfd, kind, why,
                                                                              smoke_runs):
    results, lines = _results_with_a_damaged_step(tmp_path, kind, smoke_runs), []
    with _serving(demo.make_server("127.0.0.1", 0, results, data_dir, log=lines.append)) as url:
        info = _request(url + "/api/info")[1]["steps"]
        status, answer = _request(url + "/api/predict", {"pixels": _drawn_one(), "step": "model3"})
    damaged = [line for line in lines if "model3" in line]
    assert len(damaged) == 1 and why in damaged[0] and "`make model3` writes it again" in damaged[0], lines
    model3 = info["model3"]
    assert not model3["available"] and model3["make"] == "make model3" and why in model3["problem"]
    assert info["model4"]["available"]
    model4 = answer["steps"]["model4"]
    assert status == 200 and "prediction" not in answer["steps"]["model3"]
    assert model4["prediction"] == max(range(10), key=model4["probabilities"].__getitem__)
    assert answer["feature_step"] == "model4"  # the step asked for is unavailable: the first loaded one is shown
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.slow
def test_the_program_with_a_damaged_model_says_one_line_and_serves(tmp_path, data_dir, smoke_runs):
    results = _results_with_a_damaged_step(tmp_path, "not a zip", smoke_runs)
    with socket.socket() as probe:  # a free port, given back for the server to take
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MNIST_DATA_DIR": str(data_dir)}
    process = subprocess.Popen([sys.executable, str(ROOT / "demo.py"), "--port", str(port), "--results", str(results)],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(120, process.kill)  # a server that never says it is serving fails the test, not hangs it
    watchdog.start()
    try:
        lines = [process.stdout.readline() for _ in range(3)]  # the damaged step, the loaded ones, serving on
        assert lines[-1].startswith("demo: serving on"), lines
        status, info = _request(f"http://127.0.0.1:{port}/api/info")
        assert status == 200 and not info["steps"]["model3"]["available"] and info["steps"]["model4"]["available"]
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
        watchdog.cancel()
    output = "".join(lines) + out + err
    assert "Traceback" not in output and process.returncode == 143, output
    assert len([line for line in output.splitlines() if "model3" in line]) == 1, output


def test_each_failure_to_start_is_named_for_what_failed(data_dir, monkeypatch):
    with pytest.raises(errors.UsageError, match="cannot listen on 256.0.0.1:0"):
        demo.make_server("256.0.0.1", 0, ROOT / "results", data_dir)

    def unreadable(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "/x/MNIST/raw/train-images-idx3-ubyte")
    monkeypatch.setattr(demo.common, "prepare_data", unreadable)
    with pytest.raises(errors.DataError, match="cannot read MNIST in .*: Permission denied: "
                                               "/x/MNIST/raw/train-images-idx3-ubyte"):
        demo.make_server("127.0.0.1", 0, ROOT / "results", data_dir)


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
def test_the_page_in_a_real_browser(server, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
    if not _chromium():
        pytest.skip("no Chromium here (Debian's `chromium` package; .ci/run installs it)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(server + "/")
        page.wait_for_selector(".sample")
        assert page.locator("#wrongNote").inner_text() == "; a red frame marks a digit model3 gets wrong"
        box = page.locator("#draw").bounding_box()
        page.mouse.move(box["x"] + 140, box["y"] + 50)
        page.mouse.down()
        for y in range(50, 240, 10):  # a vertical stroke: a one
            page.mouse.move(box["x"] + 140, box["y"] + y)
        page.mouse.up()
        page.wait_for_selector('[data-step="model3"] .digit:not(:empty)')
        assert page.locator('[data-step="model3"] .digit').inner_text() == "1"
        assert page.locator("#features .block").count() == 7
        idle = "() => !pending && !again"  # the page's own state: no request in flight, none waiting
        page.wait_for_function(idle)
        with page.expect_response("**/api/predict") as response:
            page.locator(".sample").first.click()
        assert response.value.ok
        page.wait_for_function(idle)  # ... and so the answer to the click is the last one painted
        shown = page.locator('[data-step="model3"] .digit').inner_text()
        _, replayed = _request(server + "/api/predict", raw=response.value.request.post_data_buffer)
        assert shown == str(response.value.json()["steps"]["model3"]["prediction"])
        assert shown == str(replayed["steps"]["model3"]["prediction"])  # the server's answer to the same input
        shot = tmp_path / "demo.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    if os.environ.get("DEMO_SCREENSHOT"):  # the README's picture: DEMO_SCREENSHOT=$PWD/results/demo.png make check
        shutil.copyfile(shot, os.environ["DEMO_SCREENSHOT"])
    assert shot.stat().st_size > 10_000


@pytest.mark.slow
def test_the_page_shows_a_damaged_step_as_unavailable_with_why(tmp_path, data_dir, smoke_runs):
    playwright = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
    if not _chromium():
        pytest.skip("no Chromium here (Debian's `chromium` package; .ci/run installs it)")
    results = _results_with_a_damaged_step(tmp_path, "truncated", smoke_runs)
    with _serving(demo.make_server("127.0.0.1", 0, results, data_dir, log=lambda *_: None)) as url, \
            playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(url + "/")
        missing = page.locator('[data-step="model3"] .missing')
        missing.wait_for()
        text = missing.inner_text()
        assert "cannot be loaded" in text and "not a complete zip archive" in text and "make model3" in text
        assert page.locator('[data-step="model4"] .bar').count() == 10  # the others are there
        note = page.locator("#wrongNote").inner_text()  # the framed digits are a loaded step's mistakes
        assert "model3" not in note and re.search(r"a red frame marks a digit model[124] gets wrong", note), note
        browser.close()


def test_a_step_not_trained_here_says_how_long_its_committed_run_took(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"train_seconds": 324.0, "device": "cpu (X, 2 threads)"}))
    assert demo.how_long(tmp_path / "metrics.json") == "about 5 min on cpu (X, 2 threads)"
    assert demo.how_long(tmp_path / "absent.json") is None
    (tmp_path / "metrics.json").write_text("{broken")
    assert demo.how_long(tmp_path / "metrics.json") is None


def test_a_step_trained_with_other_layers_is_loaded_as_its_run_built_it(tmp_path):
    # Other widths change which weights a net has: the demo must build those, from the settings the run's
    # metrics.json records, not the step's Net at its default widths.
    flags = ["--widths", "4,8,4,6,8,8"]
    config = cli.config_from_args(cli.build_parser("model3", __import__("model3").DEFAULTS, "").parse_args(flags))
    torch.manual_seed(0)
    trained = net_of("model3", flags).eval()
    (tmp_path / "model3").mkdir()
    (tmp_path / "model3" / "model.pt").write_bytes(files.state_dict_bytes(trained))
    code = provenance.code_record(trained, common.TRAINING_PATH)
    (tmp_path / "model3" / "metrics.json").write_text(json.dumps(dict(config=cli.settings_to_record(config),
                                                                      code=code)))
    models = demo.Models(tmp_path, dict(mean=0.1307, std=0.3081), log=pytest.fail)
    assert models.info["model3"]["available"] and models.info["model3"]["params"] == common.count_params(trained)
    digit = torch.rand(1, 1, 28, 28)
    with torch.inference_mode():
        assert torch.equal(models.nets["model3"](digit), trained(digit))


@pytest.mark.parametrize("edit, why", [("other", "other code than today's (net, model3.py:Net changed)"),
                                       ("unknown", "unknown code (before runs recorded theirs)")])
def test_a_step_made_by_other_code_than_today_s_is_unavailable_with_why(tmp_path, smoke_runs, edit, why):
    """Weights trained by another net or another training path are not what today's step makes: the page shows the
    step as unavailable, says why, and names the `make` target that trains it again."""
    shutil.copytree(smoke_runs["model3"][1], tmp_path / "model3")
    metrics = json.loads((tmp_path / "model3" / "metrics.json").read_text())
    if edit == "other":  # as if the run had been made before an edit of model3.Net
        metrics["code"]["parts"] = dict(metrics["code"]["parts"], net="0" * 16, **{"model3.py:Net": "1" * 16})
        metrics["code"]["fingerprint"] = provenance.fingerprint(metrics["code"]["parts"])
    else:  # as if made before runs recorded their code
        del metrics["code"]
    (tmp_path / "model3" / "metrics.json").write_text(json.dumps(metrics))
    lines = []
    models = demo.Models(tmp_path, dict(mean=0.1307, std=0.3081), log=lines.append)
    info = models.info["model3"]
    assert not info["available"] and info["make"] == "make model3" and "model3" not in models.nets
    assert info["problem"] == f"{tmp_path / 'model3'} was made by {why}"
    assert lines == [f"demo: {info['problem']}; model3 is shown as unavailable (`make model3` trains it again)"]


def test_an_interrupt_as_a_connection_s_thread_starts_stops_the_server_and_gives_its_slot_back_once(monkeypatch):
    """SIGTERM can land in the accepting thread while the connection's thread it just started has already served
    and let go of its slot: the slot is given back once, and the interrupt (not a semaphore's error) goes on up."""
    import socketserver

    def served_then_interrupted(self, request, client_address):
        self.process_request_thread(request, client_address)  # the thread ran to its end first
        raise errors.Terminated()
    monkeypatch.setattr(socketserver.ThreadingMixIn, "process_request", served_then_interrupted)
    monkeypatch.setattr(socketserver.ThreadingMixIn, "process_request_thread", lambda *args: None)
    server = demo.bind("127.0.0.1", 0, max_connections=2)
    try:
        with pytest.raises(errors.Terminated):
            server.process_request(object(), ("127.0.0.1", 1))
        assert server.slots.acquire(blocking=False) and server.slots.acquire(blocking=False)  # both slots free
        assert not server.slots.acquire(blocking=False) and not server.holding
    finally:
        server.server_close()
