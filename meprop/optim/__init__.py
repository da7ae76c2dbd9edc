"""meprop.optim: drop-in torch.optim optimizers that make a meProp training step cheap.

``Adam``, ``AdamW`` and ``SGD`` take their torch.optim namesake's arguments plus
``lazy``:

- ``lazy=False`` (default): exactly the torch.optim algorithm (the paper's setting:
  "no modification to the optimizers").
- ``lazy=True``: the weights of meProp layers get row-sparse gradients and are updated
  only in the rows that received a gradient this step, with their optimizer state
  (torch.optim.SparseAdam's semantics). Biases and dense layers are updated exactly as
  torch.optim does. One optimizer covers ``model.parameters()``::

      model = meprop.convert(model, k=20)
      opt = meprop.optim.Adam(model.parameters(), lr=1e-3, lazy=True)
      for x, y in data:
          opt.zero_grad()
          loss_fn(model(x), y).backward()
          torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)   # optional
          opt.step()

See :mod:`meprop.optim._lazy_rows` for how a step runs.
"""

from meprop.optim.adam import Adam, AdamW
from meprop.optim.sgd import SGD

__all__ = ["Adam", "AdamW", "SGD"]
