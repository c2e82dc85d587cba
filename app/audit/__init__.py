"""The audit trail's integrity: checking the hash chain (`trail`), sealing its head in storage
(`anchors`), bringing anchored entries back into a catalog (`recovery`), and second-person approvals of
restores and deletions (`approvals`). The rows themselves are written by app.catalog.audit."""
