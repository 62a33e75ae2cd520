"""demo.py: MNIST's preparation of a drawn digit, the API against a real server, and the page in a real browser."""
import json
import os
import shutil
import socket
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
import torch.nn.functional as F

from harness import files
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


@pytest.fixture(scope="module")
def server(data_dir):
    server = demo.make_server("127.0.0.1", 0, ROOT / "results", data_dir, log=lambda *_: None)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


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


def test_a_drawing_gets_every_steps_prediction_and_feature_maps(server):
    status, answer = _request(server + "/api/predict", {"pixels": _drawn_one(), "step": "model3"})
    assert status == 200
    assert len(answer["input"]) == 784 and max(answer["input"]) > 0.5
    model3 = answer["steps"]["model3"]
    assert model3["available"] and model3["prediction"] == 1 and sum(model3["probabilities"]) == pytest.approx(1, abs=1e-3)
    assert answer["feature_step"] == "model3" and [f["rf"] for f in answer["features"]][:2] == [3, 5]
    for step, info in answer["steps"].items():
        assert info["available"] or info["make"] == f"make {step}"


@pytest.mark.parametrize("body, code, words", [
    (b"{broken", 400, "not valid JSON"), (b"[1, 2]", 400, "expected a JSON object"),
    (json.dumps({"pixels": [0.5] * 100}).encode(), 400, "square image"),
    (json.dumps({"pixels": ["a"] * 784}).encode(), 400, "must be a number"),
    (json.dumps({"pixels": [2.0] * 784}).encode(), 400, "grey level in 0..1"),
    (json.dumps({"pixels": [0.0] * 784}).encode(), 400, "no ink"),
    (json.dumps({"pixels": [0.5] * 784, "step": "model9"}).encode(), 400, "unknown step"),
    (b"0" * (demo.MAX_BODY + 1), 413, "over"),
])
def test_bad_requests_get_a_4xx_with_a_message_and_the_server_keeps_serving(server, body, code, words):
    status, answer = _request(server + "/api/predict", raw=body)
    assert status == code and words in answer["error"]
    assert _request(server + "/api/info")[0] == 200


def test_a_huge_declared_body_is_refused_without_reading_it(server):
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as client:
        head = f"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: {demo.DRAIN_LIMIT + 1}\r\n\r\n"
        client.sendall(head.encode())
        reply = client.makefile("rb").read()  # the server answers and hangs up, with no body sent
    assert reply.startswith(b"HTTP/1.0 413") and b"over" in reply
    assert _request(server + "/api/info")[0] == 200


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


def test_a_port_in_use_is_one_line_and_exit_2(data_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run_script("demo.py", "--port", taken.getsockname()[1], data_dir=data_dir, timeout=60)
    assert_clean_failure(result, 2, "already in use")
    assert len(result.stderr.strip().splitlines()) == 1


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_the_page_in_a_real_browser(server, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
    if not _chromium():
        pytest.skip("no Chromium here (Debian's `chromium` package; .ci/run installs it)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(server + "/")
        page.wait_for_selector(".sample")
        box = page.locator("#draw").bounding_box()
        page.mouse.move(box["x"] + 140, box["y"] + 50)
        page.mouse.down()
        for y in range(50, 240, 10):  # a vertical stroke: a one
            page.mouse.move(box["x"] + 140, box["y"] + y)
        page.mouse.up()
        page.wait_for_selector('[data-step="model3"] .digit:not(:empty)')
        assert page.locator('[data-step="model3"] .digit').inner_text() == "1"
        assert page.locator("#features .block").count() == 7
        with page.expect_response("**/api/predict") as response:
            page.locator(".sample").first.click()
        assert response.value.ok
        page.wait_for_timeout(300)  # the answer is painted
        assert page.locator('[data-step="model3"] .digit').inner_text() in "0123456789"
        shot = tmp_path / "demo.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    if os.environ.get("DEMO_SCREENSHOT"):  # the README's picture: DEMO_SCREENSHOT=results/demo.png make test
        shutil.copyfile(shot, os.environ["DEMO_SCREENSHOT"])
    assert shot.stat().st_size > 10_000
