"""Build tooling kept out of the installed packages: the protobuf code generator."""
