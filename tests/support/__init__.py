"""What the tests share: tiny models written on the fly, documents, real servers
(SeaweedFS, Ray heads and clusters) and the job run as users run it."""
