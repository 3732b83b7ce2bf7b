"""The pure core of synapse-syncv3: no I/O and no Synapse imports.

* :mod:`.tokens` — the since-token codec (SPEC §4.4)
* :mod:`.params` — sticky params: merging, change and reset detection (SPEC §5)
* :mod:`.fields` — field validation helpers shared by the streams (SPEC §3.4)
* :mod:`.request` — query-string and body parsing (SPEC §3.2, §3.3)
* :mod:`.acks` — the to_device confirmation minimum (SPEC §8)
"""
