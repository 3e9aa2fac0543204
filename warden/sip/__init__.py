"""The SIP stack: a pure protocol core (message, parser, transaction) with Twisted at the edges."""
