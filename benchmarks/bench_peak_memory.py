"""asv: peak memory of one overall backprop of the paper's MLP, dense vs meProp.

The extra bytes one ``loss.backward()`` of 784 -> n -> n -> 10 needs on top of what is
already allocated (model, inputs, preallocated ``.grad``), measured with the engine's
:func:`meprop.lab.engine.runner.peak_memory`: ``torch.cuda.max_memory_allocated`` on CUDA, the
sampled peak RSS delta on CPU (approximate: memory the allocator already holds reads as
0). The dense backward allocates a fresh (n, n) weight gradient per hidden layer; meProp
with ``sparse_grad`` only k rows of it.

malloc serves every block of 128 KiB or more with its own mmap in these processes
(:func:`meprop.lab.engine.allocator.release_large_blocks`), so a call's buffers show in the resident
set each time, and the kernel's high-water mark gives the peak without sampling.
``launch_method: spawn`` runs every benchmark and parameter combination in a fresh
process, so the dense and the meProp numbers never share allocator state.
"""

from . import common

__all__ = ["PeakMemory"]


class PeakMemory:
    """Peak extra memory of the MLP's loss.backward(), input (batch, 784), hidden n x 2."""

    workload = "mlp"
    measurement = "overall_backward"
    params = common.PARAMS
    param_names = common.PARAM_NAMES
    timeout = 600

    def setup(self, *params):
        common.release_large_blocks()  # freed blocks go back to the OS: the RSS shows each call's need
        self.case = common.make_case(self.workload, self.measurement, *params)
        self.fns = common.build_pair(self.case)  # NotImplementedError: n/a

    def track_dense_bytes(self, *params):
        return common.peak_bytes(self.fns["dense"], self.case)

    track_dense_bytes.unit = "bytes"

    def track_meprop_bytes(self, *params):
        return common.peak_bytes(self.fns["meprop"], self.case)

    track_meprop_bytes.unit = "bytes"
