"""The model: loading a checkpoint with its head (``modeling``, the mean-pooling head in
``mean_pooling``), freezing, the device and precision it runs in (``devices``), and two fast
paths beside torch's own: cheaper dropout masks (``dropout``) and FSDP2 sharding (``sharding``)."""
