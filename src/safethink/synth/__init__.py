"""safethink.synth"""
