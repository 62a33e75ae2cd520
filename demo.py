"""See inside the networks: a local page to draw a digit and watch every step decide.

    python demo.py                       # then open http://127.0.0.1:8000
    python demo.py --port 8080 --results results

Each step whose results/<step>/model.pt exists is loaded once; a missing one is shown with the `make` target that
creates it. The page sends the canvas as grey levels; the server prepares it as MNIST prepared its digits (crop to
the ink, scale the longer side to 20 px keeping the aspect ratio, centre of mass at the centre of 28×28), shows
that 28×28 image, every step's probabilities for 0–9, and the feature maps of one step's blocks, labelled with their
receptive fields (common.feature_maps, the function behind every step's features.png).

Served by the standard library's threading HTTP server; every asset is inline, nothing comes from the internet.
API: GET /api/info, GET /api/samples, POST /api/predict {"pixels": [n*n grey levels in 0..1], "step": "model3"}.
"""
import argparse
import errno
import importlib
import json
import math
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch
import torch.nn.functional as F

import common
from harness import cli, errors, files, mnist

MAX_BODY = 1 << 20           # bytes; a larger request is refused with 413
DRAIN_LIMIT = 16 * MAX_BODY  # an oversized body up to this is read and dropped, so the client hears the 413
MIN_SIDE, MAX_SIDE = 28, 280  # the canvas is sent as a square of this many grey levels a side
SAMPLES = 12                  # test digits offered on the page


# ----------------------------------------------------------------------------------------------------------------
# MNIST's preparation of a drawn digit


class BadInput(ValueError):
    """A request the server refuses with 400 and this message."""


def prepare_digit(image, ink_threshold=0.05):
    """A square H×W tensor of grey levels in [0, 1] (ink bright) → the 28×28 image MNIST would have made of it:
    cropped to the ink, its longer side scaled to 20 px with the aspect ratio kept, and placed so that its centre
    of mass falls on the centre of the 28×28 field."""
    ink = (image > ink_threshold).nonzero()
    if len(ink) == 0:
        raise BadInput("the image has no ink: draw a digit first")
    (top, left), (bottom, right) = ink.min(0).values.tolist(), ink.max(0).values.tolist()
    crop = image[top:bottom + 1, left:right + 1]
    height, width = crop.shape
    scale = 20 / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    small = F.interpolate(crop[None, None], size=size, mode="bilinear", antialias=True, align_corners=False)[0, 0]
    small = small.clamp(0, 1)
    rows, cols = torch.arange(size[0], dtype=small.dtype), torch.arange(size[1], dtype=small.dtype)
    mass = small.sum()
    centre_row, centre_col = (small.sum(1) @ rows) / mass, (small.sum(0) @ cols) / mass
    # Where the box's top-left corner goes so that its centre of mass lands on pixel centre 13.5 (rounded to whole
    # pixels, as MNIST did), kept inside the field.
    top = min(max(round(13.5 - centre_row.item()), 0), 28 - size[0])
    left = min(max(round(13.5 - centre_col.item()), 0), 28 - size[1])
    field = torch.zeros(28, 28, dtype=small.dtype)
    field[top:top + size[0], left:left + size[1]] = small
    return field


def parse_pixels(body):
    """The JSON body of /api/predict → (square grey-level tensor, requested step). Raises BadInput."""
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadInput(f"the body is not valid JSON ({e})") from None
    if not isinstance(request, dict) or not isinstance(request.get("pixels"), list):
        raise BadInput('expected a JSON object {"pixels": [grey levels in 0..1], "step": "model3"}')
    pixels = request["pixels"]
    side = math.isqrt(len(pixels))
    if side * side != len(pixels) or not MIN_SIDE <= side <= MAX_SIDE:
        raise BadInput(f"expected a square image of n×n grey levels with n in {MIN_SIDE}..{MAX_SIDE}, "
                       f"got {len(pixels)} values")
    if not all(isinstance(p, (int, float)) and not isinstance(p, bool) for p in pixels):
        raise BadInput("every pixel must be a number")
    image = torch.tensor(pixels, dtype=torch.float32).reshape(side, side)
    if not torch.isfinite(image).all() or image.min() < 0 or image.max() > 1:
        raise BadInput("every pixel must be a grey level in 0..1")
    step = request.get("step")
    if step is not None and step not in common.STEPS:
        raise BadInput(f"unknown step {step!r}; the steps are {', '.join(common.STEPS)}")
    return image, step


# ----------------------------------------------------------------------------------------------------------------
# The models


class Models:
    """Every step whose model.pt exists, loaded once (weights only), and what to run for the missing ones."""

    def __init__(self, results, data):
        self.mean, self.std = data["mean"], data["std"]
        self.nets, self.info, self.lock = {}, {}, threading.Lock()
        for step in common.STEPS:
            path = Path(results) / step / "model.pt"
            if not (Path(__file__).parent / f"{step}.py").exists():
                continue
            module = importlib.import_module(step)
            if not path.exists():
                self.info[step] = dict(available=False, make=f"make {step}")
                continue
            metrics = Path(results) / step / "metrics.json"
            net = module.Net(**self._net_kwargs(metrics))
            try:
                net.load_state_dict(files.load_state_dict(path))
            except (RuntimeError, OSError, ValueError) as e:
                raise errors.DataError(f"{path} cannot be loaded into {step}.Net ({str(e).splitlines()[0]}); "
                                       f"run `make {step}` to write it again") from None
            net.eval()
            self.nets[step] = net
            self.info[step] = dict(available=True, params=common.count_params(net),
                                   receptive_field=common.feature_rf(common.receptive_field(net)))

    @staticmethod
    def _net_kwargs(metrics_path):
        """The widths a step was trained with, from its metrics.json (the defaults where it records none)."""
        try:
            config = json.loads(Path(metrics_path).read_text()).get("config", {})
        except (OSError, ValueError):
            return {}
        kwargs = config.get("net_kwargs", {})
        return {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items() if k == "widths"}

    def normalise(self, digit):
        return (digit - self.mean) / self.std

    def predict(self, digit, feature_step=None):
        """Probabilities of every loaded step for one prepared 28×28 digit, and one step's feature maps."""
        x = self.normalise(digit)
        with self.lock, torch.inference_mode():  # one forward at a time: the 2 cores are shared anyway
            steps = {}
            for step, info in self.info.items():
                if step in self.nets:
                    probabilities = F.softmax(self.nets[step](x[None, None]), dim=1)[0]
                    steps[step] = dict(info, prediction=int(probabilities.argmax()),
                                       probabilities=[round(float(p), 4) for p in probabilities])
                else:
                    steps[step] = info
            feature_step = feature_step if feature_step in self.nets else next(iter(self.nets), None)
            features = []
            if feature_step:
                for name, rf, maps in common.feature_maps(self.nets[feature_step], x):
                    features.append(dict(name=name, rf=rf, size=maps.shape[-1], channels=len(maps),
                                         maps=[[round(float(v), 3) for v in m.flatten()] for m in maps[:16]]))
        return dict(input=[round(float(v), 3) for v in digit.flatten()], steps=steps, feature_step=feature_step,
                    features=features)


def pick_samples(models, data, count=SAMPLES):
    """Test digits for the page: those step 3 (else the first loaded step) gets wrong among the first 2,000, then
    the first few test digits it gets right."""
    images, labels = data["test"]
    chooser = models.nets.get("model3") or next(iter(models.nets.values()), None)
    wrong = []
    if chooser is not None:
        with torch.inference_mode():
            x = models.normalise(images[:2000].float().div(255)).unsqueeze(1)
            wrong = (chooser(x).argmax(1) != labels[:2000]).nonzero().flatten().tolist()
    chosen = wrong[:count // 2] + [i for i in range(count) if i not in wrong][:count - len(wrong[:count // 2])]
    return [dict(index=i, label=int(labels[i]), misclassified=i in wrong,
                 pixels=[round(float(v), 3) for v in images[i].flatten().float().div(255)]) for i in chosen]


# ----------------------------------------------------------------------------------------------------------------
# The server


class Handler(BaseHTTPRequestHandler):
    server_version = "mnist-steps-demo"
    models, samples, page = None, None, b""  # set by serve()

    def log_message(self, format, *args):  # one short line a request, on stderr
        sys.stderr.write(f"demo: {self.command} {self.path} -> {args[1] if len(args) > 1 else ''}\n")

    def send_json(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def error(self, status, message):
        self.send_json(status, dict(error=message))

    def do_GET(self):
        if self.path in ("/", "/index.html"):
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(self.page)))
            self.end_headers()
            self.wfile.write(self.page)
        elif self.path == "/api/info":
            self.send_json(HTTPStatus.OK, dict(steps=self.models.info))
        elif self.path == "/api/samples":
            self.send_json(HTTPStatus.OK, dict(samples=self.samples))
        else:
            self.error(HTTPStatus.NOT_FOUND, f"no such page: {self.path}")

    def not_allowed(self):
        self.error(HTTPStatus.METHOD_NOT_ALLOWED, f"{self.command} is not served here: GET the page, POST /api/predict")

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = not_allowed

    def do_POST(self):
        if self.path != "/api/predict":
            return self.error(HTTPStatus.NOT_FOUND, f"no such endpoint: {self.path}")
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return self.error(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required")
        if length > MAX_BODY:
            # Answering before the body is read makes a client that is still sending see a broken pipe, not
            # the 413: read and drop a body of reasonable size; beyond that, answer and hang up.
            if length <= DRAIN_LIMIT:
                while length > 0 and (chunk := self.rfile.read(min(length, 1 << 16))):
                    length -= len(chunk)
            self.close_connection = True
            return self.error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body is over {MAX_BODY:,} bytes")
        if length < 0:
            return self.error(HTTPStatus.BAD_REQUEST, "a negative Content-Length")
        try:
            image, step = parse_pixels(self.rfile.read(length))
            self.send_json(HTTPStatus.OK, self.models.predict(prepare_digit(image), step))
        except BadInput as e:
            self.error(HTTPStatus.BAD_REQUEST, str(e))
        except Exception as e:  # the server keeps serving whatever one request does
            self.error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(e).__name__}: {e}")


def make_server(host, port, results, data_dir, log=print):
    """Bind the port first (a taken port fails at once, raising OSError), then load the data and the models."""
    server = ThreadingHTTPServer((host, port), Handler)
    try:
        data = common.prepare_data(data_dir, log=lambda *_: None)
        models = Models(results, data)
        Handler.models, Handler.samples = models, pick_samples(models, data)
        Handler.page = (Path(__file__).parent / "demo.html").read_bytes()
    except BaseException:
        server.server_close()
        raise
    loaded = ", ".join(models.nets) or "none"
    missing = ", ".join(f"{s} (`{i['make']}`)" for s, i in models.info.items() if not i["available"])
    log(f"demo: models loaded: {loaded}" + (f"; missing: {missing}" if missing else ""))
    return server


def main(argv=None):
    parser = cli.OneLineParser(prog="demo.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=cli.number_parser(int, "a port in 1..65535", lambda v: 0 < v < 65536),
                        default=8000, help="port (default: %(default)s)")
    parser.add_argument("--results", default="results", help="folder of the steps' runs (default: %(default)s)")
    parser.add_argument("--data-dir", default=mnist.default_data_dir(),
                        help="folder holding MNIST/raw, for the test digits (default: $MNIST_DATA_DIR, else data)")
    args = parser.parse_args(argv)
    return errors.run_main("demo.py", lambda: serve(args), interrupted="the server stopped")


def serve(args):
    try:
        server = make_server(args.host, args.port, args.results, args.data_dir)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise errors.UsageError(f"port {args.port} on {args.host} is already in use (choose another with --port)")
        raise errors.UsageError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    print(f"demo: serving on http://{args.host}:{server.server_address[1]}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    sys.exit(main())
