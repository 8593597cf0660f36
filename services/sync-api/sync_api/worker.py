"""sync-worker's broker module, loaded by ``dramatiq sync_api.worker`` in every worker process."""

from antrian.runtime.workers import boot

broker = boot("sync-worker", "sync_api.sync.actors")
