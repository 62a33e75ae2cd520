"""The fast path on a GPU: common.TrainBatch, compiled and recorded as a CUDA graph.

On CUDA a net this small is bound by kernel launches, not by arithmetic, so two things cut them: the forward pass
with its loss is compiled (torch.compile fuses each batch norm with its ReLU, forward and backward), and the whole
update is recorded once as a CUDA graph and then replayed, which launches all of a batch's kernels at once. The
first batch trains without the graph (it creates the momentum buffers), the second is recorded; a smaller last
batch trains eagerly. Before the timed run, `fast` pays the one-time costs (compilation, cuDNN's algorithm search,
lazy loading); `setup_seconds` counts them, and the epochs' times leave them out.
"""
import copy
import sys
import time

import torch


def fast(train_batch, train_loader, evaluate_test, throwaway_optimizer):
    """`train_batch` (common.TrainBatch) compiled and replayed as a CUDA graph, its one-time costs paid now: a few
    updates by `throwaway_optimizer` at each batch size the run will use, a first batch, and `evaluate_test()`."""
    torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN time its algorithms once
    graphed = GraphedTrainBatch(train_batch)
    train_size, batch_size = len(train_loader.labels), train_loader.batch_size
    last_batch = train_size - (len(train_loader) - 1) * batch_size
    graphed.warm_up(throwaway_optimizer, [min(batch_size, train_size), last_batch],
                    first_epoch=lambda: warm_up_loader(train_loader, evaluate_test))
    return graphed


class GraphedTrainBatch:
    """Takes the place of a plain common.TrainBatch (`update(x, y)`: forward, loss, backward, optimizer step and
    running sums; `__call__`: zero_grad, update, scheduler): same calls, same results, fewer launches. Whatever it
    does not override (the model, the optimizer, the sums) is the plain one's."""

    def __init__(self, plain):
        self.plain = plain
        self.eager_forward = plain.loss_and_correct
        self.compiled = torch.compile(self.eager_forward, dynamic=False)
        plain.loss_and_correct = self._forward  # the plain update now runs the compiled forward
        self.full_batch, self.graph, self.static_x, self.static_y = None, None, None, None
        self.batches_done, self.setup_seconds, self.compiled_once = 0, 0.0, False

    def __getattr__(self, name):
        return getattr(self.plain, name)

    def _forward(self, x, y):
        if self.compiled is not None and len(x) == self.full_batch:  # one compiled shape; a smaller batch eager
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
        return self.eager_forward(x, y)

    def _record(self, x, y):
        started = time.perf_counter()
        self.static_x, self.static_y = x.clone(), y.clone()
        self.plain.optimizer.zero_grad(set_to_none=True)  # so backward inside the graph allocates .grad from its pool
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):  # DataLoader threads may run
            self.plain.update(self.static_x, self.static_y)
        torch.cuda.synchronize(self.plain.device)
        self.setup_seconds += time.perf_counter() - started

    def __call__(self, x, y):
        if self.full_batch is None:
            self.full_batch = len(x)
        if self.batches_done == 0 or len(x) != self.full_batch:
            self.plain(x, y)  # eagerly, scheduler included
        else:
            if self.graph is None:
                self._record(x, y)  # recording runs nothing; the replay below does this batch's work
            self.static_x.copy_(x)
            self.static_y.copy_(y)
            self.graph.replay()
            if self.plain.scheduler is not None:
                self.plain.scheduler.step()
        self.batches_done += 1

    def warm_up(self, throwaway_optimizer, batch_sizes, first_epoch):
        """Compile and tune now, on random batches of each size the run will use (see warm_up_updates), then call
        `first_epoch()` for the rest of a first epoch's one-time costs."""
        started = time.perf_counter()
        self.full_batch = batch_sizes[0]
        warm_up_updates(self.plain, throwaway_optimizer, batch_sizes)
        first_epoch()
        torch.cuda.synchronize(self.plain.device)
        self.setup_seconds += time.perf_counter() - started


def warm_up_updates(train_batch, throwaway_optimizer, batch_sizes, image_shape=(1, 28, 28)):
    """Three updates of `train_batch`'s model on random batches of each size, by `throwaway_optimizer`, off the main
    stream (as graph capture wants), so that compilation, cuDNN's algorithm search, lazy module loading and the
    allocator's first requests happen now; then the weights, the batch-norm statistics and the random streams as
    they were, so the run itself starts exactly as it would have."""
    model, device = train_batch.model, train_batch.device
    saved_state, real_optimizer = copy.deepcopy(model.state_dict()), train_batch.optimizer
    train_batch.optimizer = throwaway_optimizer
    cuda = device.type == "cuda"
    stream = torch.cuda.Stream(device) if cuda else None
    if cuda:
        stream.wait_stream(torch.cuda.current_stream(device))
    with torch.random.fork_rng(devices=[device] if cuda else []), torch.cuda.stream(stream):
        for size in dict.fromkeys(batch_sizes):
            x = torch.randn(size, *image_shape, device=device)
            y = torch.randint(0, 10, (size,), device=device)
            for _ in range(3):
                train_batch.optimizer.zero_grad(set_to_none=True)
                train_batch.update(x, y)
    if cuda:
        torch.cuda.current_stream(device).wait_stream(stream)
    train_batch.optimizer = real_optimizer
    train_batch.optimizer.zero_grad(set_to_none=True)
    model.load_state_dict(saved_state)
    train_batch.reset_sums()


def warm_up_loader(train_loader, evaluate_test):
    """The rest of a first epoch's one-time costs: loading the loader's kernels (its random stream is rewound
    after) and cuDNN's search for the test batches' shapes (`evaluate_test()`, which changes nothing)."""
    state = train_loader.generator.get_state()
    next(iter(train_loader))
    train_loader.generator.set_state(state)
    evaluate_test()
