"""Provider adapters. Built-ins are registered through the same entry points as plug-ins."""
