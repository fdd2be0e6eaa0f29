"""scanmail-smtpd: the SMTP receiver that fills SPOOL/incoming."""
