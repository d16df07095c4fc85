"""The fusion model: frame aggregation → multi-modal fusion → MLP classifier, and the
prototype baseline it must beat.

Modules: ``aggregation`` (avg, NetVLAD, GhostVLAD, NeXtVLAD, AttentionVLAD), ``fusion``
(concat, MMA, MLMA), ``classifier``, ``net``, ``config`` (architectures, recipes),
``data`` (clip sets from the feature store), ``iqiyi_store`` (the iQIYI-VID-2019 release
converted into a store), ``prototype``, ``runtime`` (device, autocast), ``train``,
``infer``, ``synthetic`` (the adversarial generator), ``cli``.
Nothing is imported here, so ``vidpipe.models.cli`` can load without torch.
"""
