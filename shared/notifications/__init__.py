"""Messages to customers and staff: the port, its adapters, the queue and the sender loop."""
