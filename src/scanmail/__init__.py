"""scanmail: an e-mail virus firewall for a store-and-forward SMTP spool."""

__version__ = "0.1.0"
