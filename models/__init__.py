"""Model bundles (``<name>/<version>/``) and the training recipes that rebuild them.

Training code lives in ``models.training`` and needs the ``[train]`` extra (PyTorch);
the appliance never imports this package.
"""
