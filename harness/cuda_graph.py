"""The fast path on a GPU: common.train_epoch's update, compiled and recorded once as a CUDA graph, then replayed.

On CUDA a net this small is bound by kernel launches, not by arithmetic, so two things cut them: the forward pass
with its loss is compiled (torch.compile fuses each batch norm with its ReLU, forward and backward), and the whole
update — forward, loss, backward, optimizer step — is recorded once as a CUDA graph and then replayed, which
launches all of a batch's kernels at once. The loop stays common.train_epoch's: for each batch it asks
`GraphedUpdate.takes(x)`, and where the answer is no (the run's first update, which creates the optimizer's momentum
buffers; a smaller last batch) it runs its own textbook lines. Before the timed run, `fast` pays the one-time costs
(compilation, cuDNN's algorithm search, lazy loading); `setup_seconds` counts them, and the epochs' times leave
them out. tests/test_cuda.py trains the same seed both ways and compares the weights.
"""
import copy
import sys
import time

import torch
import torch.nn.functional as F


def fast(model, optimizer, config, train_loader, evaluate_test, throwaway_optimizer):
    """A GraphedUpdate of `model` and `optimizer` (the loss as `config` sets it), its one-time costs paid now: a few
    updates by `throwaway_optimizer` at each batch size the run will use, a first batch, and `evaluate_test()`."""
    torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN time its algorithms once
    train_size, batch_size = len(train_loader.labels), train_loader.batch_size
    graphed = GraphedUpdate(model, optimizer, config.label_smoothing, config.precision == "bf16",
                            full_batch=min(batch_size, train_size))
    last_batch = train_size - (len(train_loader) - 1) * batch_size
    started = time.perf_counter()
    warm_up_updates(model, graphed.forward_and_loss, throwaway_optimizer, [graphed.full_batch, last_batch])
    warm_up_loader(train_loader, evaluate_test)
    torch.cuda.synchronize(graphed.device)
    graphed.setup_seconds += time.perf_counter() - started
    return graphed


class GraphedUpdate:
    """One training update of full batches, replayed as a CUDA graph: `graphed(x, y)` does what the body of
    common.train_epoch's loop does — zero_grad, forward, loss, backward, optimizer step — and returns the loss and
    the logits, which the loop sums as it sums its own."""

    def __init__(self, model, optimizer, label_smoothing, bf16, full_batch):
        self.model, self.optimizer, self.label_smoothing, self.bf16 = model, optimizer, label_smoothing, bf16
        self.device, self.full_batch = next(model.parameters()).device, full_batch
        self.compiled = torch.compile(self.eager_forward_and_loss, dynamic=False)
        self.graph, self.static_x, self.static_y, self.static_out = None, None, None, None
        self.setup_seconds, self.compiled_once, self.optimizer_stepped = 0.0, False, False
        optimizer.register_step_post_hook(self._stepped)

    def _stepped(self, optimizer, args, kwargs):
        self.optimizer_stepped = True

    def eager_forward_and_loss(self, x, y):  # the loop's forward and loss, as common.train_epoch writes them
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.model(x)
        return F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing), logits

    def forward_and_loss(self, x, y):
        """Compiled for the full batch (one shape, compiled once); a smaller batch, or a GPU torch.compile cannot
        serve, runs eagerly."""
        if self.compiled is not None and len(x) == self.full_batch:
            try:
                result = self.compiled(x, y)
                self.compiled_once = True
                return result
            except Exception as error:  # e.g. no Triton for this GPU: training still works, uncompiled
                if self.compiled_once:
                    raise
                print(f"note: torch.compile failed here ({type(error).__name__}); training uncompiled",
                      file=sys.stderr)
                self.compiled = None
        return self.eager_forward_and_loss(x, y)

    def takes(self, x):
        """Whether the loop hands this batch to the graph: a full batch, once the optimizer has taken its first step
        (eagerly, in the loop), so that the momentum buffers the graph updates in place exist."""
        return len(x) == self.full_batch and self.optimizer_stepped

    def _record(self, x, y):
        started = time.perf_counter()
        self.static_x, self.static_y = x.clone(), y.clone()
        self.optimizer.zero_grad(set_to_none=True)  # so backward inside the graph allocates .grad from its pool
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            loss, logits = self.forward_and_loss(self.static_x, self.static_y)
            loss.backward()
            self.optimizer.step()
        self.static_out = (loss.detach(), logits.detach())
        torch.cuda.synchronize(self.device)
        self.setup_seconds += time.perf_counter() - started

    def __call__(self, x, y):
        if self.graph is None:
            self._record(x, y)  # recording runs nothing; the replay below does this batch's work
        self.static_x.copy_(x)
        self.static_y.copy_(y)
        self.graph.replay()
        return self.static_out  # overwritten by the next replay: the loop sums them before it asks for more


def warm_up_updates(model, forward_and_loss, throwaway_optimizer, batch_sizes, image_shape=(1, 28, 28)):
    """Three updates of `model` on random batches of each size, by `throwaway_optimizer`, off the main stream (as
    graph capture wants), so that compilation, cuDNN's algorithm search, lazy module loading and the allocator's
    first requests happen now; then the weights, the batch-norm statistics and the random streams as they were, so
    the run itself starts exactly as it would have."""
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
                throwaway_optimizer.zero_grad(set_to_none=True)
                loss, _ = forward_and_loss(x, y)
                loss.backward()
                throwaway_optimizer.step()
    if cuda:
        torch.cuda.current_stream(device).wait_stream(stream)
    throwaway_optimizer.zero_grad(set_to_none=True)
    model.load_state_dict(saved_state)


def warm_up_loader(train_loader, evaluate_test):
    """The rest of a first epoch's one-time costs: loading the loader's kernels (its random stream is rewound
    after) and cuDNN's search for the test batches' shapes (`evaluate_test()`, which changes nothing)."""
    state = train_loader.generator.get_state()
    next(iter(train_loader))
    train_loader.generator.set_state(state)
    evaluate_test()
