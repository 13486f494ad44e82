"""The upload pipeline: receive -> hash/limit/sniff -> spool + store parts -> validate -> record."""
