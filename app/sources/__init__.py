"""Sources: what is backed up. Nouns: entry (one file, directory or symlink of a tree), walk (the
entries of a tree, with the paths that could not be read), PostgreSQL data directory walk (the files a
base backup holds, less PostgreSQL's exclusion list, tablespaces included)."""
