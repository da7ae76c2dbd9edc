"""The measured operations: the models and the functions a case is timed on.

- :mod:`~meprop.lab.ops.build`: ``build(case, variant)``, the operation of one case (dense or meProp);
- :mod:`~meprop.lab.ops.models`: the paper's models (MNIST MLP, POS LSTM tagger), dense or meProp;
- :mod:`~meprop.lab.ops.model_ops`, :mod:`~meprop.lab.ops.lstm_ops`, :mod:`~meprop.lab.ops.transformer`,
  :mod:`~meprop.lab.ops.user_model`: each workload's builders;
- :mod:`~meprop.lab.ops.train_step`: the training step (zero_grad, forward, loss, backward, step).

May import: the library, the lab's bottom modules, ``results`` and ``plan``. Nothing here times.
"""

__all__: list[str] = []
