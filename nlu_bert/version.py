__version__ = "0.1.0"

# Bumped whenever what a component writes into the Rasa model archive changes shape.
# An archive with another major format is refused at load time with a clear message.
ARCHIVE_FORMAT = 1
