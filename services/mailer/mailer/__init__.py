"""mailer: booking invoice and e-ticket emails, each sent once."""
