"""Self-supervision core: patchify/unpatchify, masking, the reconstruction loss and the pre-training loop.

Everything here except ``pretrain`` (which takes a ``device``) and ``preview`` (which writes a PNG) is pure.
Submodules are imported explicitly (``from endofed.ssl.masking import make_mask``); this package imports
nothing eagerly, so ``endofed.models`` can depend on ``endofed.ssl.patches`` without an import cycle.
"""
