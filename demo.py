"""See inside the networks: a local page to draw a digit and watch every step decide.

    python demo.py                       # then open http://127.0.0.1:8000
    python demo.py --port 8080 --results results

Each step whose results/<step>/model.pt exists is loaded once; a missing one is shown with the `make` target that
creates it, a damaged one (one line on the log) with why it cannot be loaded and the same target, the other steps
served as ever. The page sends the canvas as grey levels; the server prepares it as MNIST prepared its digits (crop to
the ink, scale the longer side to 20 px keeping the aspect ratio, centre of mass at the centre of 28×28), shows
that 28×28 image, every step's probabilities for 0–9, and the feature maps of one step's blocks, labelled with their
receptive fields (common.feature_maps, the function behind every step's features.png).

Served by the standard library's threading HTTP server, bounded so that no client can hold it: a connection has
REQUEST_TIMEOUT (5 s) to send its whole request, else it is answered 408 (closed, if not even its first line came),
and as long to take the answer; at most MAX_CONNECTIONS (256) are served at once, and one more is answered 503 at
once; a body over MAX_BODY (1 MiB) is answered 413 and the connection closed. Every asset is inline, nothing comes
from the internet.
API: GET /api/info, GET /api/samples, POST /api/predict {"pixels": [n*n grey levels in 0..1], "step": "model3"}.
"""
import argparse
import collections
import errno
import importlib
import io
import json
import math
import socket
import sys
import threading
import time
import zipfile
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch
import torch.nn.functional as F

import common
from harness import cli, errors, files, mnist, provenance

MAX_BODY = 1 << 20           # bytes; a larger request is refused with 413
DRAIN_LIMIT = 1 << 16        # of an oversized body, at most this is read and dropped after the 413 (see refuse_body)
REQUEST_TIMEOUT = 5          # seconds a connection has to send its whole request, and again to take the answer
MAX_CONNECTIONS = 256        # served at once, a thread each; one more is answered 503 at once
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
    """The JSON body of /api/predict → (square grey-level tensor, requested step). Raises BadInput, saying what is
    wrong in one line, for any body that is not such a request: not JSON (not UTF-8, nested too deep, an integer
    of more digits than Python reads), another shape, or pixels that are not grey levels (NaN, ±Infinity, an
    integer too large for a float)."""
    try:
        request = json.loads(body)
    except ValueError as e:  # a JSONDecodeError, a UnicodeDecodeError, an integer of over 4,300 digits
        raise BadInput(f"the body is not valid JSON ({one_line(e)})") from None
    except RecursionError:
        raise BadInput("the body is not valid JSON (nested too deeply)") from None
    if not isinstance(request, dict) or not isinstance(request.get("pixels"), list):
        raise BadInput('expected a JSON object {"pixels": [grey levels in 0..1], "step": "model3"}')
    pixels = request["pixels"]
    side = math.isqrt(len(pixels))
    if side * side != len(pixels) or not MIN_SIDE <= side <= MAX_SIDE:
        raise BadInput(f"expected a square image of n×n grey levels with n in {MIN_SIDE}..{MAX_SIDE}, "
                       f"got {len(pixels)} values")
    if not all(isinstance(p, (int, float)) and not isinstance(p, bool) for p in pixels):
        raise BadInput("every pixel must be a number")
    if not all(0 <= p <= 1 for p in pixels):  # before any conversion: NaN fails it, and so do 1e400 and 10**400
        raise BadInput("every pixel must be a grey level in 0..1")
    image = torch.tensor(pixels, dtype=torch.float32).reshape(side, side)
    step = request.get("step")
    if step is not None and not isinstance(step, str):
        raise BadInput(f"the step must be a step's name, one of {', '.join(common.STEPS)}")
    if step is not None and step not in common.STEPS:
        raise BadInput(f"unknown step {one_line(repr(step))}; the steps are {', '.join(common.STEPS)}")
    return image, step


def one_line(text, limit=200):
    """`text` (or an error) as one line of at most about `limit` characters, for a message."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "…"


# ----------------------------------------------------------------------------------------------------------------
# The models


class Models:
    """Every step whose model.pt loads, loaded once (weights only); for every other step, why not and the `make`
    target that writes it. A damaged file costs its own step only: one line on the log, and the page shows why."""

    def __init__(self, results, data, log=print):
        self.mean, self.std = data["mean"], data["std"]
        self.nets, self.info, self.lock = {}, {}, threading.Lock()
        for step in common.STEPS:
            path = Path(results) / step / "model.pt"
            if not (Path(__file__).parent / f"{step}.py").exists():
                continue
            module, make = importlib.import_module(step), f"make {step}"
            if not path.exists():
                self.info[step] = dict(available=False, make=make, takes=how_long(path.parent / "metrics.json"))
                continue
            try:
                net = self._load(module, path)
            except Exception as e:  # whatever a damaged file raises, the other steps are served
                problem = f"{path} cannot be loaded: {' '.join(str(e).split())[:200] or type(e).__name__}"
                log(f"demo: {problem}; {step} is shown as unavailable (`{make}` writes it again)")
                self.info[step] = dict(available=False, make=make, problem=problem)
                continue
            other_code = self._other_code(net, path.parent / "metrics.json")
            if other_code:  # weights of another net, or of other training: not what today's step makes
                problem = f"{path.parent} was made by {other_code}"
                log(f"demo: {problem}; {step} is shown as unavailable (`{make}` trains it again)")
                self.info[step] = dict(available=False, make=make, problem=problem,
                                       takes=how_long(path.parent / "metrics.json"))
                continue
            self.nets[step] = net
            self.info[step] = dict(available=True, params=common.count_params(net),
                                   receptive_field=common.feature_rf(common.receptive_field(net)))

    @classmethod
    def _load(cls, module, path):
        """The step's Net with the weights in `path`, in eval mode. Raises an error that says what is wrong."""
        try:
            data = path.read_bytes()
        except OSError as e:
            raise OSError(f"cannot read it ({e.strerror or e})") from None
        # torch.save writes a zip archive; what torch.load raises for anything else (an OSError "Invalid argument"
        # for a truncated file, an IndexError or an UnpicklingError for another) does not say what is wrong.
        if not zipfile.is_zipfile(io.BytesIO(data)):
            raise ValueError(f"it is not a complete zip archive, as torch.save writes ({len(data):,} bytes: "
                             "truncated, or not a saved model)")
        net = common.build_net(module.Net, cls._settings(module, path.parent / "metrics.json"))
        net.load_state_dict(files.load_state_dict(io.BytesIO(data)))
        return net.eval()

    @staticmethod
    def _other_code(net, metrics_path):
        """"other code than today's (…changed)" or "unknown code (…)" where the run's recorded code is not what
        today's files make of its net and training path (harness/provenance.py), else ""."""
        try:
            made_by, parts = provenance.code_of_run(json.loads(Path(metrics_path).read_text()))
        except (OSError, ValueError):
            made_by, parts = None, None
        today = provenance.fingerprint_parts(net, common.TRAINING_PATH)
        if made_by is None:
            return "unknown code (before runs recorded theirs)"
        if made_by != provenance.fingerprint(today):
            differs = provenance.what_differs(parts, today)
            return "other code than today's" + (f" ({differs} changed)" if differs else "")
        return ""

    @staticmethod
    def _settings(module, metrics_path):
        """What builds the net a step was trained as (its widths, and batch norm or not), from its metrics.json: a
        run made with `--widths` or `--no-batchnorm` has other weights than one made without. Where the file records
        no settings, the step's defaults of today."""
        try:
            recorded = json.loads(Path(metrics_path).read_text()).get("config")
        except (OSError, ValueError):
            recorded = None
        if not isinstance(recorded, dict):
            return cli.config_from_args(cli.build_parser(module.__name__, module.DEFAULTS, "").parse_args([]))
        settings = cli.settings_recorded_in(dict(config=recorded))  # a setting newer than the run: its default then
        settings["net_kwargs"] = {k: tuple(v) if isinstance(v, list) else v for k, v in settings["net_kwargs"].items()}
        return argparse.Namespace(**settings)

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


def how_long(metrics_path):
    """How long the step's committed run trained, and where, from its metrics.json ("about 5 min on cpu (…)"), so a
    newcomer whose clone has no model.pt for steps 1 and 2 (git keeps only the small nets' weights) knows what
    `make model1` costs; None where no run recorded it."""
    try:
        metrics = json.loads(Path(metrics_path).read_text())
        minutes = float(metrics["train_seconds"]) / 60
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return f"about {max(1, round(minutes))} min on {metrics.get('device', 'its device')}"


def pick_samples(models, data, count=SAMPLES):
    """Test digits for the page: those step 3 (else the first loaded step) gets wrong among the first 2,000, then
    the first few test digits it gets right; and the step that judged them (None where no step is loaded)."""
    images, labels = data["test"]
    judge = "model3" if "model3" in models.nets else next(iter(models.nets), None)
    chooser = models.nets.get(judge)
    wrong = []
    if chooser is not None:
        with torch.inference_mode():
            x = models.normalise(images[:2000].float().div(255)).unsqueeze(1)
            wrong = (chooser(x).argmax(1) != labels[:2000]).nonzero().flatten().tolist()
    chosen = wrong[:count // 2] + [i for i in range(count) if i not in wrong][:count - len(wrong[:count // 2])]
    return dict(judged_by=judge, samples=[dict(index=i, label=int(labels[i]), misclassified=i in wrong,
                                               pixels=[round(float(v), 3) for v in images[i].flatten().float().div(255)])
                                          for i in chosen])


# ----------------------------------------------------------------------------------------------------------------
# The server


class RequestReader(io.RawIOBase):
    """A connection's incoming bytes, each read allowed only what is left of the `seconds` its request may take
    from the moment it connected: a client that trickles a byte a second is let go as surely as a silent one."""

    def __init__(self, sock, seconds):
        self.sock, self.seconds, self.deadline = sock, seconds, time.monotonic() + seconds

    def readable(self):
        return True

    def readinto(self, buffer):
        left = self.deadline - time.monotonic()
        if left > 0:
            self.sock.settimeout(left)
            try:
                return self.sock.recv_into(buffer)
            except TimeoutError:
                pass
        raise TimeoutError(f"no complete request within {self.seconds:g} s")


class Handler(BaseHTTPRequestHandler):
    """One connection: one request (HTTP/1.0), which must arrive within `timeout` seconds of connecting, and its
    answer, which the client must take within as many again. make_server gives each server its own subclass, with
    the models, the sample digits and the page."""
    server_version = "mnist-steps-demo"
    timeout = REQUEST_TIMEOUT
    models, samples, page = None, None, b""

    def setup(self):
        super().setup()
        self.rfile.close()  # the standard library's reader, replaced by one that keeps the deadline
        self.rfile = io.BufferedReader(RequestReader(self.connection, self.timeout))

    def parse_request(self):
        """The standard library's, with headers that do not arrive in time answered 408 (a request line that does
        not arrive is no request to answer: the standard library closes the connection, saying so on the log)."""
        try:
            return super().parse_request()
        except TimeoutError as e:
            self.close_connection = True
            self.error(HTTPStatus.REQUEST_TIMEOUT, f"{e}: the headers did not arrive")
            return False

    def end_headers(self):
        self.connection.settimeout(self.timeout)  # the answer has as long to be taken as the request had to come
        super().end_headers()

    def log_request(self, code="-", size="-"):  # one short line a request, on stderr
        self.log_message("%s -> %s", self.requestline[:120], getattr(code, "value", code))

    def log_message(self, format, *args):  # and one line for anything else the standard library notes
        sys.stderr.write(f"demo: {format % args}\n")

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
            self.send_json(HTTPStatus.OK, self.samples)
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
        if length < 0:
            return self.error(HTTPStatus.BAD_REQUEST, "a negative Content-Length")
        if length > MAX_BODY:
            return self.refuse_body()
        try:
            body = self.rfile.read(length)
        except TimeoutError as e:
            self.close_connection = True
            return self.error(HTTPStatus.REQUEST_TIMEOUT, f"{e}: the body did not arrive")
        if len(body) < length:
            return self.error(HTTPStatus.BAD_REQUEST, f"the body ended after {len(body):,} of its {length:,} bytes")
        try:
            image, step = parse_pixels(body)
        except BadInput as e:
            return self.error(HTTPStatus.BAD_REQUEST, str(e))
        except Exception as e:  # whatever else reading the body raises, it is the body the server cannot read
            self.log_message("a body parse_pixels did not foresee: %s: %s", type(e).__name__, one_line(e))
            return self.error(HTTPStatus.BAD_REQUEST, f"the body cannot be read as a request ({type(e).__name__}: "
                                                      f"{one_line(e)})")
        try:
            answer = self.models.predict(prepare_digit(image), step)
        except BadInput as e:  # a drawing with no ink
            return self.error(HTTPStatus.BAD_REQUEST, str(e))
        except Exception as e:  # a fault of the server's own: 500, and it keeps serving whatever one request does
            return self.error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(e).__name__}: {one_line(e)}")
        self.send_json(HTTPStatus.OK, answer)

    def refuse_body(self):
        """413 for a body over MAX_BODY, sent before the body is read, then the connection half-closed. A client
        that sends its whole body before it reads (most do) would see a reset instead of the answer if the
        connection closed on its unread bytes, so up to DRAIN_LIMIT more of them, within the request's time, are
        read and dropped; a larger body is cut off there, which such a client sees as a reset."""
        self.close_connection = True
        self.error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body is over {MAX_BODY:,} bytes")
        try:
            self.connection.shutdown(socket.SHUT_WR)
            dropped = 0
            while dropped < DRAIN_LIMIT and (chunk := self.rfile.read1(DRAIN_LIMIT - dropped)):
                dropped += len(chunk)
        except OSError:  # the time is up (TimeoutError) or the client has gone: nothing more to do for it
            pass


class Server(ThreadingHTTPServer):
    """The standard library's threading HTTP server, bounded: at most `max_connections` connections are served at
    once (a thread each, for no longer than Handler.timeout to read a request and as long to answer it); one more
    is answered 503 at once, without a thread, rather than kept waiting, so that the server never holds more
    than that many threads and a client always hears something within the time a request may take."""
    request_queue_size = 128  # connections the kernel holds until they are accepted (the default 5 drops a burst)
    refused_linger = 1.0      # seconds a refused connection stays open, so its request cannot reset the 503 away

    def __init__(self, address, handler, max_connections=MAX_CONNECTIONS):
        self.slots, self.holding = threading.BoundedSemaphore(max_connections), set()
        body = json.dumps(dict(error=f"the server is busy with {max_connections} connections; try again in a moment"))
        self.busy_reply = (f"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                           f"Content-Length: {len(body)}\r\nRetry-After: 1\r\n\r\n{body}").encode()
        self.refused = collections.deque()  # (when to close it, socket), oldest first
        super().__init__(address, handler)  # binds, and on failure calls server_close

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            return self.refuse(request, client_address)
        self.holding.add(request)
        try:
            super().process_request(request, client_address)  # starts the connection's thread
        except BaseException:  # Ctrl-C or SIGTERM as the thread starts: it may have served and let go already
            self.let_go(request)
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.let_go(request)

    def let_go(self, request):
        """Give back the slot `request` holds, once, whichever of its two holders comes first: a second release
        would raise, and in the accepting thread that error would stand in for the interrupt it was handling."""
        try:
            self.holding.remove(request)  # one step under the GIL: only one caller finds it
        except KeyError:
            return
        self.slots.release()

    def refuse(self, request, client_address):
        sys.stderr.write(f"demo: {client_address[0]}:{client_address[1]} answered 503: every connection is taken\n")
        request.setblocking(False)  # the accepting thread never waits on a client
        try:
            request.send(self.busy_reply)
            request.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.refused.append((time.monotonic() + self.refused_linger, request))

    def service_actions(self):  # called by serve_forever between connections and at least twice a second
        super().service_actions()
        while self.refused and self.refused[0][0] <= time.monotonic():
            self.refused.popleft()[1].close()

    def handle_error(self, request, client_address):  # a connection's failure is one line, not a traceback
        error = sys.exc_info()[1]
        sys.stderr.write(f"demo: {client_address[0]}:{client_address[1]}: {type(error).__name__}: {error}\n")

    def server_close(self):
        super().server_close()
        while self.refused:
            self.refused.popleft()[1].close()


def bind(host, port, max_connections=MAX_CONNECTIONS):
    """The server, listening on host:port; a port that cannot be bound is a UsageError saying why."""
    try:
        return Server((host, port), Handler, max_connections)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise errors.UsageError(f"port {port} on {host} is already in use (choose another with --port)") from None
        raise errors.UsageError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def make_server(host, port, results, data_dir, log=print, max_connections=MAX_CONNECTIONS):
    """Bind the port first (a taken port fails at once), then load the data and the models. What fails is named:
    binding the port (UsageError), reading MNIST or the page (DataError); a model that cannot be loaded is one line
    on `log`, and its step is shown as unavailable."""
    server = bind(host, port, max_connections)
    try:
        try:
            data = common.prepare_data(data_dir, log=lambda *_: None)
        except OSError as e:
            raise errors.DataError(f"cannot read MNIST in {data_dir}: {errors.os_reason(e)}") from None
        models = Models(results, data, log)
        page = Path(__file__).parent / "demo.html"
        try:
            html = page.read_bytes()
        except OSError as e:
            raise errors.DataError(f"cannot read the page {page}: {errors.os_reason(e)}") from None
        server.RequestHandlerClass = type("Handler", (Handler,), dict(
            models=models, samples=pick_samples(models, data), page=html))
    except BaseException:
        server.server_close()
        raise
    loaded = ", ".join(models.nets) or "none"
    missing = ", ".join(f"{s} (`{i['make']}`)" for s, i in models.info.items() if not i["available"] and
                        "problem" not in i)
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
    server = make_server(args.host, args.port, args.results, args.data_dir)
    print(f"demo: serving on http://{args.host}:{server.server_address[1]}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    sys.exit(main())
