"""``make demo``: a scripted day through the real CLI and a real hub, printing what it did.

Part one is one tablet: registration, visits, follow-ups, a conflict, locking, erasing. Part two
starts a regional hub (``python -m sync_hub serve``), enrols two tablets, lets both CHWs edit
the same patient offline, syncs, and shows the merged chart with its listed conflict on both.
Part three starts central (``python -m central serve``, on SQLite) and a hub wired to it,
records an antenatal visit with danger signs on a new tablet, shows what central holds for the
patient as the clinician console reads it over FHIR, and brings a clinician's referral answer
and advice back to the tablet. The demo reaches the servers only through their command lines
and HTTP: field_app imports neither.

It runs in a fresh temporary folder, so it never touches a real store, and leaves nothing
behind unless ``--keep`` is given.
"""
