"""The fast path on a GPU: common.train_step recorded once as a CUDA graph, then replayed.

On CUDA a net this small is bound by kernel launches, not by arithmetic: a batch's forward, backward and optimizer
step are a few hundred tiny kernels. A CUDA graph records them once and then launches them all at once. What is
recorded is the loop's own update — the function common.train_step, called with tensors whose place in memory
stays fixed — so an edit of that function (another loss, say) changes every batch on every device; nothing here
computes a loss, a backward pass or an optimizer step of its own. The run's first update (which creates the
optimizer's momentum buffers) and a smaller last batch run train_step as it is. Should recording raise (no machine
of this project's could run it when it was written), the run goes on with train_step as it is, says so in one line,
and records it (metrics.json's "update"). Before the timed run, `graphed`
pays the one-time costs (cuDNN's algorithm search, lazy loading, the allocator's first requests); `setup_seconds`
counts them, and the epochs' times leave them out. tests/test_cuda.py trains the same seed both ways and compares
the weights.
"""
import copy
import time

import torch


def graphed(step, model, optimizer, train_loader, evaluate_test, spare_optimizer, log=print):
    """A GraphedStep of `step` (common.train_step) for `model` and `optimizer`, its one-time costs paid now: three
    updates by `spare_optimizer` at each batch size the run will use, a first batch, and `evaluate_test()`."""
    torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN time its algorithms once
    train_size, batch_size = len(train_loader.labels), train_loader.batch_size
    update = GraphedStep(step, optimizer, full_batch=min(batch_size, train_size), log=log)
    last_batch = train_size - (len(train_loader) - 1) * batch_size
    started = time.perf_counter()
    warm_up(step, model, spare_optimizer, [update.full_batch, last_batch])
    warm_up_loader(train_loader, evaluate_test)
    torch.cuda.synchronize()
    update.setup_seconds += time.perf_counter() - started
    return update


class GraphedStep:
    """`step(model, optimizer, x, y)` for full batches, recorded at the first full batch after the optimizer's first
    step and replayed from then on; any other batch runs `step` as it is, and so does every batch once recording
    has failed (`failed` says why)."""

    def __init__(self, step, optimizer, full_batch, log=print):
        self.step, self.full_batch, self.log = step, full_batch, log
        self.graph, self.static_x, self.static_y, self.static_out = None, None, None, None
        self.setup_seconds, self.optimizer_stepped, self.failed = 0.0, False, None
        optimizer.register_step_post_hook(self._stepped)

    def _stepped(self, optimizer, args, kwargs):
        self.optimizer_stepped = True

    def _record(self, model, optimizer, x, y):
        started = time.perf_counter()
        self.static_x, self.static_y = x.clone(), y.clone()
        optimizer.zero_grad(set_to_none=True)  # so backward inside the graph allocates .grad from its pool
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.static_out = self.step(model, optimizer, self.static_x, self.static_y)
        torch.cuda.synchronize()
        self.setup_seconds += time.perf_counter() - started

    def __call__(self, model, optimizer, x, y):
        # The momentum buffers the graph updates in place must exist before it is recorded: the first step is eager.
        if len(x) != self.full_batch or not self.optimizer_stepped or self.failed:
            return self.step(model, optimizer, x, y)
        if self.graph is None:
            try:
                self._record(model, optimizer, x, y)  # recording runs nothing; the replay below does this batch's work
            except Exception as error:  # noqa: BLE001  (whatever CUDA says, the run goes on without the graph)
                first_line = str(error).splitlines()[0] if str(error) else ""
                self.graph, self.failed = None, f"{type(error).__name__}: {first_line}"
                self.log(f"recording train_step as a CUDA graph failed ({self.failed}); the run goes on with "
                         "train_step as it is")
                return self.step(model, optimizer, x, y)  # nothing recorded ran: this batch, as it is
        self.static_x.copy_(x)
        self.static_y.copy_(y)
        self.graph.replay()
        return self.static_out  # overwritten by the next replay: the loop sums them before it asks for more

    def described(self):
        """How the run's updates ran, as metrics.json records it."""
        if self.failed:
            return f"train_step as it is: recording it as a CUDA graph failed ({self.failed})"
        return "train_step replayed as a CUDA graph" if self.graph is not None else "train_step"


def warm_up(step, model, spare_optimizer, batch_sizes, image_shape=(1, 28, 28)):
    """Three updates of `model` by `step` on random batches of each size, with `spare_optimizer`, off the main
    stream (as graph capture wants), so that cuDNN's algorithm search, lazy module loading and the allocator's first
    requests happen now; then the weights, the batch-norm statistics and the random streams as they were, so the
    run itself starts exactly as it would have."""
    device = next(model.parameters()).device
    saved_state = copy.deepcopy(model.state_dict())
    cuda = device.type == "cuda"
    stream = torch.cuda.Stream(device) if cuda else None
    if cuda:
        stream.wait_stream(torch.cuda.current_stream(device))
    with torch.random.fork_rng(devices=[device] if cuda else []), torch.cuda.stream(stream):
        for size in dict.fromkeys(batch_sizes):
            x = torch.randn(size, *image_shape, device=device)
            y = torch.randint(0, 10, (size,), device=device)
            for _ in range(3):
                step(model, spare_optimizer, x, y)
    if cuda:
        torch.cuda.current_stream(device).wait_stream(stream)
    spare_optimizer.zero_grad(set_to_none=True)
    model.load_state_dict(saved_state)


def warm_up_loader(train_loader, evaluate_test):
    """The rest of a first epoch's one-time costs: loading the loader's kernels (its random stream is rewound
    after) and cuDNN's search for the test batches' shapes (`evaluate_test()`, which changes nothing)."""
    state = train_loader.generator.get_state()
    next(iter(train_loader))
    train_loader.generator.set_state(state)
    evaluate_test()
