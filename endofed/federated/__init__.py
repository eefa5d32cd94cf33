"""Pure federation numerics: what is shared, how it is averaged, checked, compressed and pulled back.

Everything here works on plain state dicts (``str -> numpy array or torch tensor``) and never imports
``flwr``: the Flower glue in ``server/`` and ``client/`` translates records to and from these dicts.

* :mod:`~endofed.federated.weights`: the key policy (which state-dict entries leave a site) and encoder
  state extraction/loading.
* :mod:`~endofed.federated.protocol`: the wire contract (phases, message and metric keys, files written).
* :mod:`~endofed.federated.proximal`: the FedProx proximal term added to a site's loss.
* :mod:`~endofed.federated.validate`: server-side checks that reject a broken or malicious site update.
* :mod:`~endofed.federated.bytes`: byte accounting and transport compression (fp32, bf16, int8 delta).
"""
