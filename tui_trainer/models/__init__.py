"""Model families: the registry (pure data) and, train side, loading and counting real modules."""
