"""The fusion model (issue 3): frame aggregation → multi-modal fusion → MLP classifier.

Modules: ``aggregation`` (avg, NetVLAD, GhostVLAD, NeXtVLAD, AttentionVLAD), ``fusion``
(concat, MMA, MLMA), ``classifier``, ``net``, ``config`` (named architectures), ``data``
(iQIYI-VID files and the feature store), ``train``, ``infer``, ``synthetic``, ``cli``.
Nothing is imported here, so ``vidpipe.models.cli`` can load without torch.
"""
