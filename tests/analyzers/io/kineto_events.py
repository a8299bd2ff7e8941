"""A minimal well-formed set of Kineto events (a CPU op, its launch, its kernel) that io tests build files from."""

GOOD_EVENTS = [
    {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 1, "ts": 100.5, "dur": 10,
     "args": {"External id": 3}},
    {"ph": "X", "cat": "kernel", "name": "gemm", "pid": 0, "tid": 7, "ts": 104, "dur": 5.25,
     "args": {"stream": 7, "device": 0, "correlation": 9}},
    {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1, "ts": 101, "dur": 2,
     "args": {"correlation": 9}},
]
