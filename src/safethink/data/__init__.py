"""safethink.data"""
