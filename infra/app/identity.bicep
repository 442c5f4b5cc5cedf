// The function app's user-assigned managed identity: every data-plane role (storage, Key Vault,
// Application Insights ingestion) is granted to it, so the app holds no keys or connection strings.
param name string
param location string
param tags object

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
