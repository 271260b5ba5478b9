"""HTTP on granian (RSGI): routing, the native and internal APIs, the server process."""
