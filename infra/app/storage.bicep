// One storage account with identity-based access only (no shared keys, no connection strings) and
// the data roles the function app's identity needs on it. Instantiated once for the app's own
// storage (host, configuration tables, OAuth state, queues, deployment package) and once per
// selected geography for the EHR user mapping, in a region of that geography.
param name string
param location string
param tags object

@description('Replication. ZRS keeps every copy in the chosen region, which is what data residency asks for.')
@allowed(['Standard_LRS', 'Standard_ZRS', 'Standard_GRS', 'Standard_GZRS', 'Standard_RAGRS', 'Standard_RAGZRS'])
param skuName string = 'Standard_ZRS'

@description('Principal (the function app identity) that gets the data roles below.')
param principalId string

@description('Grant Storage Blob Data Owner as well: the host storage needs blobs (leases, deployment package).')
param grantBlobDataOwner bool = false

@description('Blob container Flex Consumption deploys the app package to; empty for none.')
param deploymentContainerName string = ''

@description('Days deleted blobs and containers stay recoverable.')
@minValue(1)
@maxValue(365)
param deleteRetentionDays int = 7

var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
var roleDefinitionIds = concat(grantBlobDataOwner ? [storageBlobDataOwner] : [], [
  storageQueueDataContributor
  storageTableDataContributor
])

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    isLocalUserEnabled: false
    isSftpEnabled: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: { enabled: true, keyType: 'Account' }
        file: { enabled: true, keyType: 'Account' }
        queue: { enabled: true, keyType: 'Account' }
        table: { enabled: true, keyType: 'Account' }
      }
    }
  }

  resource blobService 'blobServices' = {
    name: 'default'
    properties: {
      deleteRetentionPolicy: {
        enabled: true
        days: deleteRetentionDays
      }
      containerDeleteRetentionPolicy: {
        enabled: true
        days: deleteRetentionDays
      }
    }

  }

  resource queueService 'queueServices' = {
    name: 'default'
  }

  resource tableService 'tableServices' = {
    name: 'default'
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = if (!empty(deploymentContainerName)) {
  parent: storage::blobService
  name: empty(deploymentContainerName) ? 'unused' : deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource dataRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for roleId in roleDefinitionIds: {
    name: guid(storage.id, principalId, roleId)
    scope: storage
    properties: {
      principalId: principalId
      principalType: 'ServicePrincipal'
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
    }
  }
]

output name string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output queueEndpoint string = storage.properties.primaryEndpoints.queue
output tableEndpoint string = storage.properties.primaryEndpoints.table
