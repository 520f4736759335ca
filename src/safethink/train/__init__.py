"""safethink.train"""
