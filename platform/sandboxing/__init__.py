"""Running tenant code apart from the platform: the sandbox of a platform-hosted worker, and reading an
app's manifest in a separate process."""
