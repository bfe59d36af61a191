"""The regional sync hub (built in the sync issue): tablets sync their charts with it."""
