"""Reading and writing traces: the Kineto/Chrome-trace reader, the loader (files, rank folders, bundles), export."""
