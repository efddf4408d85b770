"""What tests share: process and in-process clusters, fault tools, terminals, TLS files."""
