"""The library's private helpers: how meProp layers and optimizers work inside.

- ``grad_layout``: how a meProp layer lays out its weight gradient (dense, row-sparse) for
  the optimizer that asked for it, and the rows it touched;
- ``layer_probe``: one probing forward of a model, to find the layer called last;
- ``sparse_grad_ops``: the sparse-gradient kernels torch lacks (norms and scaling of
  row-sparse gradients, for ``clip_grad_norm_`` and friends).

Nothing here is public API: the library's public modules import it, the lab never does.
"""
