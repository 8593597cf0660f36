"""mailer's broker module, loaded by ``dramatiq mailer.worker`` in every worker process."""

from dramatiq.middleware import Middleware

from antrian.runtime.workers import boot


class CloseSmtpConnections(Middleware):
    """Each worker thread says QUIT on its SMTP connection as it stops, instead of just dropping it."""

    def before_worker_thread_shutdown(self, broker, thread):
        from mailer.emails import actors

        actors.close_transport()


broker = boot("mailer", "mailer.emails.actors", middleware=[CloseSmtpConnections()])
