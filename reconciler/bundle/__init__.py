"""Air-gap bundles: one file carries fleet history, the artifacts it pins and a signed manifest to an offline
device, and a status file carries the device's status commits back.

    bundle (tar, optionally zstd)               status-<device>.tar
      manifest.json        members' sha256, commit, selection, sequence      manifest.json
      manifest.json.sig    SSH signature of manifest.json (--sign-key)       git/pack-*.pack|idx
      oci/oci-layout, oci/index.json, oci/blobs/sha256/<hex>  (OCI image layout)
      git/pack-*.pack|idx  fleet commits (--since..--rev) and the server's status tips

    create.py      admin side: select devices, render them, copy what they pin into the layout, write the file
    unpack.py      read a bundle as a stream, check every member against the manifest before anything moves
    apply.py       device side: the checks, then one normal agent pass with the bundle as its medium
    medium.py      the bundle as the pass's git remote and OCI source (agent/medium.py)
    statusfile.py  the device's status commits onto the medium, and ``import-status`` onto the server
"""
