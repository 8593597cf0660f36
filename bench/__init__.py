"""antrian's benchmark suite: real processes on 127.0.0.1, a dedicated database and vhost (``make bench``)."""
