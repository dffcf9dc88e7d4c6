"""LoRaWAN downlinks requested through the API: stored, pushed to the network server (The Things
Stack or ChirpStack clients), and the network's reports kept."""
