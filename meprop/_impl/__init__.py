"""The library's private helpers: how meProp layers and optimizers work inside.

- ``grad_layout``: how a meProp layer lays out its weight gradient (dense, row-sparse) for
  the optimizer that asked for it, and the rows it touched;
- ``layer_probe``: one probing forward of a model, to find the layer called last;
- ``masked_backward``: the twice-differentiable backward (the kept entries in differentiable
  ops), for ``create_graph=True`` and torch.func;
- ``sparse_grad_ops``: the sparse-gradient kernels torch lacks (norms and clamping of
  row-sparse gradients, for ``clip_grad_norm_`` and friends), registered at the first
  row-sparse gradient, not at import;
- ``coo``: keeping COO gradients coalesced cheaply.

Nothing here is public API: the library's public modules import it, the lab never does.
"""
