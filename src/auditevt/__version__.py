__version__ = "0.1.0"

#: The version of the wire contract (the Event JSON and the endpoint models). Its major part
#: changes only when an older reader could no longer read what a newer writer sends.
CONTRACT_VERSION = "1.0"
