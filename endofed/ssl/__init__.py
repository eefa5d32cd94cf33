"""Self-supervision core: masking, the reconstruction loss, reconstructions and the pre-training loop.

No file I/O, printing or device choice here: the loop and the prefetcher run on the ``device`` they are given,
and the reconstruction figure is drawn and written by :mod:`endofed.io.figures`. Patchify/unpatchify and the
visible-token indices belong to the model (:mod:`endofed.models.patches`): ``ssl`` imports ``models``, never the
reverse. Submodules are imported explicitly (``from endofed.ssl.masking import make_mask``); this package imports
nothing eagerly, so :mod:`endofed.ssl.mask_modes` stays importable without torch.
"""
